"""What a killed run left behind: every file in an output folder checked to load, and results compared to a clean run."""
from __future__ import annotations

import json
from pathlib import Path

# Fields that measure wall-clock time: they differ between any two runs, killed or not.
TIMING_KEYS = {"train_time_s", "train_wall_time_s", "elapsed", "seconds"}


def is_temporary(path: Path) -> bool:
    """A temporary file of `ssm_models.atomic.atomic_write` (`.NAME.XXXX.tmp`), left by a kill mid-write."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def check_file(path: Path) -> str | None:
    """None if the file loads as what its name says it is, else why not."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from ssm_models.hub import read_config

    try:
        if path.suffix == ".safetensors":
            load_file(path)
        elif path.name == "config.json":
            read_config(path)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif path.name == "README.md":
            if "## Usage" not in path.read_text(encoding="utf-8"):
                return "model card without its last section"
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def folder_problems(folder: Path) -> tuple[list[str], int]:
    """(files that fail to load, number of leftover temporaries) under `folder`; lock files are ignored."""
    problems, temporaries = [], 0
    if not folder.exists():
        return problems, temporaries
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if is_temporary(path):
            temporaries += 1
        elif not path.name.endswith(".lock"):
            why = check_file(path)
            if why:
                problems.append(f"{path.relative_to(folder)}: {why}")
    return problems, temporaries


def without_timing(value):
    """`value` (parsed JSON or a state dict) with every wall-clock field replaced by a marker."""
    if isinstance(value, dict):
        return {k: ("<time>" if k in TIMING_KEYS else without_timing(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    if isinstance(value, str) and value[:1] in "[{":  # the training state keeps its history as JSON text
        try:
            return without_timing(json.loads(value))
        except ValueError:
            return value
    return value


def file_differences(expected: Path, actual: Path) -> list[str]:
    """Files of `expected` that `actual` lacks or holds differently (JSON and states compared without timing)."""
    differences = []
    for path in sorted(p for p in expected.rglob("*") if p.is_file() and not p.name.startswith(".")):
        name = path.relative_to(expected).as_posix()
        other = actual / name
        if not other.is_file():
            differences.append(f"{name}: missing")
        elif not same_content(path, other):
            differences.append(f"{name}: differs")
    return differences


def same_content(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        return without_timing(json.loads(a.read_text())) == without_timing(json.loads(b.read_text()))
    if a.suffix == ".pt":
        return same_state(a, b)
    return a.read_bytes() == b.read_bytes()


def same_state(a: Path, b: Path) -> bool:
    """Two train_state.pt files equal in every tensor and value but the elapsed time (torch.save's bytes are not a
    function of the content alone)."""
    import torch

    sa, sb = (without_timing(torch.load(p, weights_only=True)) for p in (a, b))
    return _equal(sa, sb)


def _equal(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def report_differences(expected: dict, actual: dict) -> list[str]:
    """Top-level keys of two evaluation reports that differ once wall-clock fields are set aside."""
    a, b = without_timing(expected), without_timing(actual)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
