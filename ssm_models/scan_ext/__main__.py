"""`python -m ssm_models.scan_ext build [--require]`: compile the scan kernel (scripts/setup.sh and the Dockerfile)."""
from __future__ import annotations

import sys

from .build import build


def main(argv: list[str]) -> int:
    """One line saying what it did. Non-fatal unless --require: the lab works without the kernel (the PyTorch
    scan), only slower at paper scale."""
    if argv[:1] != ["build"] or not set(argv[1:]) <= {"--require"}:
        print("usage: python -m ssm_models.scan_ext build [--require]", file=sys.stderr)
        return 2
    try:
        print(f"setup: {build()}")
    except (OSError, RuntimeError) as error:
        print(f"setup: could not build the compiled scan kernel, the PyTorch scan will be used: {error}",
              file=sys.stderr)
        return 1 if "--require" in argv else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
