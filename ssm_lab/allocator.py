"""Keep freed tensor memory in the process instead of handing it back to the OS at every step (glibc only)."""
from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# Why: torch's CPU tensors come from malloc. By default glibc serves blocks above a threshold (128 KB, rising
# adaptively) with fresh mmap pages and trims the heap top after frees, so a training step of a small SSM
# (activations of 0.2-2 MB each) takes ~1,100 page faults (S4, MNIST, batch 64) to ~4,000 (Mamba), every step:
# 10-20% of its time here (benchmarks/BENCHMARKS.md, section throughput). These settings make the heap keep up
# to TRIM of free memory and serve blocks up to MMAP from it, which is what PyTorch's CPU tuning guides get
# from jemalloc or tcmalloc; the cost is that the process's resident size stays near its peak.
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20
OPT_OUT = "SSM_LAB_SYSTEM_MALLOC"  # set to 1 to keep the C library's defaults

_STATE: dict = {}


def keep_freed_memory() -> str:
    """Apply the settings once per process; returns what was done, for logs and benchmark reports."""
    if "result" not in _STATE:
        _STATE["result"] = _apply()
    return _STATE["result"]


def _apply() -> str:
    if os.environ.get(OPT_OUT, "").strip() not in ("", "0"):
        return f"C library defaults ({OPT_OUT} is set)"
    if not sys.platform.startswith("linux"):
        return f"C library defaults (mallopt tuning is for glibc; this is {sys.platform})"
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded (find_library would spawn ldconfig)
    except (OSError, AttributeError):
        return "C library defaults (no mallopt: not glibc)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # order matters: setting one threshold turns off glibc's adaptive adjustment of both
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    names = ("mmap", "trim", "top_pad")
    refused = [name for name, (param, value) in zip(names, settings) if mallopt(param, value) != 1]
    if refused:
        return f"glibc malloc, partly tuned (refused: {', '.join(refused)})"
    return (f"glibc malloc keeping freed memory (mmap threshold {MMAP_THRESHOLD >> 20} MB, trim threshold "
            f"{TRIM_THRESHOLD >> 20} MB, top pad {TOP_PAD >> 20} MB)")
