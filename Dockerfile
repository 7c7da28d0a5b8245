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
# The compiled selective scan (Mamba at paper scale): the slim image has no compiler, so g++ comes and goes in this
# one step and never reaches a layer; --require fails the build rather than ship the slower PyTorch scan silently
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
 && python -m ssm_models.scan_ext build --require \
 && apt-get purge -y --auto-remove g++ && rm -rf /var/lib/apt/lists/*
COPY --chown=user:user ssm_lab ./ssm_lab
COPY --chown=user:user app ./app
COPY --chown=user:user checkpoints ./checkpoints
COPY --chown=user:user pyproject.toml README.md ./

USER user
ENV HOME=/home/user \
    SSM_LAB_CACHE=/home/user/.cache/ssm-robustness-lab

# Test sets: the full MNIST and CIFAR-10 test sets from the Hub at build time (a Space builds with network),
# verified and decoded into $SSM_LAB_CACHE, which the app reads, as the user the app runs as. A failed or skipped
# fetch is not fatal: the app then uses the bundled 1,000-image samples inside ssm_lab/ and says so.
RUN python -m ssm_lab.cli data fetch --dataset mnist cifar10 --split test \
 || echo "ssm-lab data fetch failed: the app will use the bundled test samples (ssm_lab/datasets/sample/)"

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"SSM_LAB_PORT\", \"7860\")}/', timeout=4)"

CMD ["python", "-m", "app", "--host", "0.0.0.0"]
