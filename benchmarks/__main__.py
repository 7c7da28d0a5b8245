"""Entry point: `python -m benchmarks [--only SECTION] [--quick] [--threads N] [--output PATH]`."""
import sys

from .suite import main

sys.exit(main())
