"""How a stand-alone benchmark ends: headline and table on stdout, each problem on stderr, exit status 1 if any."""
from __future__ import annotations

import sys


def report_and_exit_code(headline: str, table: str, problems: list, label: str, most: int | None = None) -> int:
    """Print the run's headline and table, then up to `most` problems as `LABEL: problem`; 1 when there are any."""
    print(headline + "\n")
    print(table)
    for problem in problems[:most]:
        print(f"{label}:", problem, file=sys.stderr)
    return 1 if problems else 0
