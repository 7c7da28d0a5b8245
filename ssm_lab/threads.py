"""Torch's thread count for a process: 1 unless --threads or SSM_LAB_TORCH_THREADS says otherwise.

Small-batch attacks on these small models are dominated by thread hand-offs: with a second job on the other core of
a 2-core machine, AutoAttack on 4 MNIST images took 161 s with torch's default of 2 threads and 11.7 s with 1.
One thread also keeps seeded runs bit-identical to the shipped checkpoints' cards, which were measured with one."""
from __future__ import annotations

import os

ENV = "SSM_LAB_TORCH_THREADS"


def torch_threads(requested: int | None = None) -> int:
    """`requested` if given, else $SSM_LAB_TORCH_THREADS if it is a positive whole number, else 1."""
    if requested is not None:
        return max(1, int(requested))
    raw = os.environ.get(ENV, "").strip()
    return max(1, int(raw)) if raw.isdigit() else 1
