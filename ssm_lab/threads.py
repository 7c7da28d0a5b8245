"""Torch's thread count for a process: --threads or SSM_LAB_TORCH_THREADS, else 1 for attacks and evaluations.

Small-batch attacks on these small models are dominated by thread hand-offs. With a training job on the other core
of a 2-core machine, AutoAttack on 4 MNIST images took 161 s on torch's default of 2 threads and 11.7 s on 1; on
the idle machine, 2 threads gained only 1.2x (PGD-10 on 1,000 MNIST test images: 3.26 s on 1 thread, 2.65 s on 2).
Training batches are large enough to use every core (a 1-epoch PGD-AT run on 2,048 images: 82 s on 1 thread, 45 s
on 2), so training keeps torch's own count unless told otherwise."""
from __future__ import annotations

import os

from ssm_models.bounds import check_number
from ssm_models.errors import UserError

ENV = "SSM_LAB_TORCH_THREADS"
MAX_THREADS = 256  # far above any core count here; a typo such as 2000 would start that many OpenMP threads


class ThreadCountError(ValueError, UserError):
    """A thread count (--threads or $SSM_LAB_TORCH_THREADS) that is not a whole number in [1, MAX_THREADS]."""


def torch_threads(requested: int | None = None, default: int | None = 1) -> int | None:
    """`requested` if given, else $SSM_LAB_TORCH_THREADS if set, else `default` (None: leave torch's own count);
    a count that is not a whole number from 1 to MAX_THREADS is refused, not replaced by the default."""
    name, value = ("--threads", requested) if requested is not None else (ENV, os.environ.get(ENV, "").strip())
    if value == "":
        return default
    return check_number(name, value, lo=1, hi=MAX_THREADS, integer=True, text=True, cap="MAX_THREADS",
                        error=ThreadCountError)
