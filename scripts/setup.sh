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
