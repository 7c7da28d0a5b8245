#!/usr/bin/env bash
# Create .venv and install the project with the CPU build of torch; quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.ssm-lab-installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  # torchattacks 3.5.1 declares torchvision and requests~=2.25 but imports neither: --no-deps keeps them out
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps torchattacks==3.5.1
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
# The compiled selective scan (Mamba at paper scale) needs a C++ compiler: Debian's g++ when root and missing
if ! command -v c++ >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null \
    || echo "setup: could not install g++ with apt-get" >&2
fi
# Quick when the build matches the source; never fatal: without it Mamba uses the (slower) PyTorch scan
.venv/bin/python -m ssm_models.scan_ext build
# The browser the browser tests drive: Debian's chromium when running as root (CI, containers), else Playwright's
# own download. Never fatal: without a browser only the browser tests fail, and they say how to get one.
playwright_browsers=${PLAYWRIGHT_BROWSERS_PATH:-$HOME/.cache/ms-playwright}
if [ -x /usr/bin/chromium ] || ls "$playwright_browsers"/chromium*-*/ >/dev/null 2>&1; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
    echo "setup: installed Debian's chromium (apt-get) for the browser tests"
  else
    echo "setup: could not install Debian's chromium with apt-get; the browser tests will fail" >&2
  fi
elif .venv/bin/python -m playwright install chromium >/dev/null 2>&1; then
  echo "setup: downloaded Playwright's chromium for the browser tests"
else
  echo "setup: could not download Playwright's chromium; the browser tests will fail" >&2
fi
