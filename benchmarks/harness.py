"""Timing, memory and machine facts shared by every benchmark section: medians, peak RSS, load average."""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import torch

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Timing:
    """Wall-clock seconds of `repeats` timed runs (after `warmup` untimed ones) and the memory seen meanwhile."""

    samples: list[float]
    warmup: int
    peak_rss_mb: float | None = None  # peak RSS growth above the start of the first (untimed or timed) run
    scaled_from: str = ""  # non-empty when the figure is a stated extrapolation of a smaller measurement
    cpu_samples: list[float] = field(default_factory=list)  # this process's CPU seconds per timed run

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def repeats(self) -> int:
        return len(self.samples)

    @property
    def cpu_median(self) -> float | None:
        """Median CPU seconds of this process per timed run: steadier than wall time when other jobs compete."""
        return statistics.median(self.cpu_samples) if self.cpu_samples else None

    @property
    def cpu_share(self) -> float | None:
        """CPU seconds / wall seconds over the timed runs: about the thread count on an idle machine, less when
        other jobs take the cores."""
        wall = sum(self.samples)
        return sum(self.cpu_samples) / wall if self.cpu_samples and wall > 0 else None

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were on this shared machine."""
        return (max(self.samples) - min(self.samples)) / self.median if self.median > 0 else 0.0

    def scaled(self, factor: float, reason: str) -> "Timing":
        return Timing([s * factor for s in self.samples], self.warmup, self.peak_rss_mb, reason,
                      [s * factor for s in self.cpu_samples])

    def to_dict(self) -> dict:
        return {"median": self.median, "samples": self.samples, "warmup": self.warmup,
                "peak_rss_mb": self.peak_rss_mb, "scaled_from": self.scaled_from, "cpu_samples": self.cpu_samples,
                "cpu_share": self.cpu_share}


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except OSError:  # not Linux: memory figures are simply absent
        return 0


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so the next RSS baseline is honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRss:
    """Samples this process's RSS every `interval` seconds on a thread; `peak_mb` is the growth over the start."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_mb: float | None = None
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRss":
        release_memory()
        self._start = current_rss_bytes()
        self._peak = self._start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, current_rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, current_rss_bytes())
        if self._start:
            self.peak_mb = (self._peak - self._start) / 2**20


def measure(fn: Callable[[], object], repeats: int, warmup: int = 1, memory: bool = True) -> Timing:
    """Median-ready wall times of `fn()`; RSS is sampled during the first run only (the warm-up when there is
    one), so the sampling thread never perturbs a timed run unless the figure is measured exactly once."""
    peak = None
    samples, cpu = [], []
    for i in range(warmup + repeats):
        if i == 0 and memory:
            with PeakRss() as rss:
                elapsed, cpu_seconds = _timed(fn)
            peak = rss.peak_mb
        else:
            elapsed, cpu_seconds = _timed(fn)
        if i >= warmup:
            samples.append(elapsed)
            cpu.append(cpu_seconds)
    return Timing(samples, warmup, peak, cpu_samples=cpu)


def measure_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                        memory: bool = True, settle: int = 0) -> dict[str, Timing]:
    """Like `measure` for several contenders, but run in turns (A B C, B C A, C A B, ...) so that load changes
    on the shared machine hit all of them alike and their ratios stay fair. Memory is sampled during the first
    warm-up run of each (none without warm-up). With `settle`, each timed call follows that many untimed calls
    of the same contender, so it finds caches as back-to-back use leaves them (a training loop), not as the
    previous contender did (a 2048x2048 matmul sweeps 48 MB through them)."""
    names = list(fns)
    peaks: dict[str, float | None] = {name: None for name in names}
    for name in names:
        for i in range(warmup):
            if i == 0 and memory:
                with PeakRss() as rss:
                    _timed(fns[name])
                peaks[name] = rss.peak_mb
            else:
                _timed(fns[name])
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for _ in range(settle):
                fns[name]()
            elapsed, cpu_seconds = _timed(fns[name])  # never sampled for memory: the sampler costs a little
            samples[name].append(elapsed)
            cpu[name].append(cpu_seconds)
    return {name: Timing(samples[name], warmup, peaks[name], cpu_samples=cpu[name]) for name in names}


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


# ----- machine -------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def cpu_flags() -> list[str]:
    """The vector extensions this CPU advertises (what matmul and FFT speed mostly depend on)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in VECTOR_FLAGS if flag in present]
    except OSError:
        pass
    return []


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
        return "not installed"


@dataclass
class Machine:
    cpu: str
    cpu_flags: list[str]
    logical_cores: int
    usable_cores: int
    torch_version: str
    torch_threads: int
    python: str
    load_average_start: list[float]
    started_utc: str
    allocator: str
    packages: dict = field(default_factory=dict)
    load_average_end: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def machine_info(allocator: str) -> Machine:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Machine(
        cpu=cpu_model(), cpu_flags=cpu_flags(), logical_cores=os.cpu_count() or 1, usable_cores=usable,
        torch_version=torch.__version__, torch_threads=torch.get_num_threads(), python=platform.python_version(),
        load_average_start=load_average(),
        started_utc=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), allocator=allocator,
        packages={p: package_version(p) for p in ("mambapy", "torchattacks", "pyautoattack", "numpy")})
