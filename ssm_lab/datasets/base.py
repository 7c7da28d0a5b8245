"""The dataset container, seeded subsets, data/cache locations and atomic array caching."""
from __future__ import annotations

import json
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ssm_models.atomic import atomic_write
from ssm_models.errors import UserError

from .info import CIFAR10_CLASSES, DATASETS, DatasetInfo, dataset_info  # noqa: F401  (re-exported)

SPLITS = ("train", "val", "test")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
OFFLINE_ENV_VARS = ("SSM_LAB_OFFLINE", "HF_HUB_OFFLINE")


class DataError(RuntimeError, UserError):
    """A dataset cannot be loaded; the message says what is wrong and how to fix it."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The files of a dataset were not found in any of the places searched."""


class CorruptDataError(DataError):
    """A data file exists but its content is not what its format promises (bad header, size, or coding)."""


@dataclass(eq=False, repr=False)
class ImageDataset:
    """Images as uint8 (N, C, S, S) with int64 labels, plus where they came from."""

    images: np.ndarray  # (N, C, S, S) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    name: str
    split: str
    source: str  # one short line for people: what the images are, where from, how many
    warning: str | None = None
    detail: str | None = None  # the exact origin (folder path, Hub repo@revision, sample file), for records

    def __post_init__(self):
        self.images = np.ascontiguousarray(self.images)
        self.labels = np.asarray(self.labels)
        self.classes = list(self.classes)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, S, S), got {self.images.dtype} {self.images.shape}")
        n, c, h, w = self.images.shape
        if c not in (1, 3) or h != w:
            raise ValueError(f"images must have 1 or 3 channels and be square, got shape {self.images.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != (n,):
            raise ValueError(f"labels must be int64 of shape ({n},), got {self.labels.dtype} {self.labels.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)})")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        note = f", warning={self.warning!r}" if self.warning else ""
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={tuple(self.images.shape[1:])}, source={self.source!r}{note})")

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    def tensors(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] (N, C, S, S) and int64 labels (N,) for `indices` (all when None)."""
        if indices is None:
            indices = slice(None)
        elif isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        elif isinstance(indices, (int, np.integer)):
            indices = [int(indices)]
        images = np.ascontiguousarray(self.images[indices])
        x = torch.from_numpy(images).to(torch.float32).div_(255.0)  # (N, C, S, S)
        y = torch.from_numpy(np.array(self.labels[indices], dtype=np.int64))  # (N,)
        return x, y

    def subset(self, indices, note: str | None = None) -> "ImageDataset":
        """A new dataset holding copies of the chosen images; `note` is appended to `source`."""
        indices = np.asarray(indices, dtype=np.int64)
        source = f"{self.source}; {note}" if note else self.source
        return ImageDataset(self.images[indices], self.labels[indices], self.classes, self.name, self.split,
                            source, self.warning, self.detail)


def _labels_of(dataset) -> np.ndarray:
    return np.asarray(dataset.labels if hasattr(dataset, "labels") else dataset, dtype=np.int64)


def sample_indices(dataset, n: int, seed: int = 0, stratified: bool = True) -> np.ndarray:
    """A fixed, seeded, sorted subset of `n` indices; stratified keeps the class proportions (largest remainder)."""
    labels = _labels_of(dataset)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if n >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    if not stratified:
        return np.sort(rng.choice(len(labels), size=n, replace=False)).astype(np.int64)
    present, counts = np.unique(labels, return_counts=True)
    quotas = counts * n / len(labels)
    take = np.floor(quotas).astype(np.int64)
    # largest remainders first; ties go to the lower class so the allocation never depends on the seed
    order = np.lexsort((present, -(quotas - take)))
    take[order[: n - take.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(present, take)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def class_indices(dataset, label: int | str) -> np.ndarray:
    """Indices of the images of one class, given as an index or as a class name."""
    if isinstance(label, str):
        classes = list(getattr(dataset, "classes", []))
        if label not in classes:
            raise ValueError(f"unknown class {label!r}; classes: {classes}")
        label = classes.index(label)
    return np.flatnonzero(_labels_of(dataset) == int(label)).astype(np.int64)


def carve_per_class(labels: np.ndarray, per_class: Sequence[int] | int, seed: int) -> np.ndarray:
    """Sorted indices taking `per_class` seeded images of every class (a sequence is indexed by class label)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    counts = [per_class if isinstance(per_class, (int, np.integer)) else per_class[c] for c in classes]
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, counts)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def data_root(data_dir: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The explicit data folder and how it was chosen (argument, then $SSM_LAB_DATA); None when there is none.

    There is no default folder: a machine without one uses the Hub (or its cache), then the bundled sample."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir argument"
    if os.environ.get("SSM_LAB_DATA"):
        return Path(os.environ["SSM_LAB_DATA"]).expanduser(), "SSM_LAB_DATA"
    return None, "no data folder given (data_dir / SSM_LAB_DATA)"


def dataset_dir(root: Path, name: str) -> Path:
    """`root/<name>/` when it exists, else `root` itself (so data_dir may point at either level)."""
    nested = root / name
    return nested if nested.is_dir() else root


def cache_dir() -> Path:
    """User cache for decoded arrays: $SSM_LAB_CACHE, else ~/.cache/ssm-robustness-lab/ (never the repository)."""
    if os.environ.get("SSM_LAB_CACHE"):
        return Path(os.environ["SSM_LAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ssm-robustness-lab"


def describe_path(path: Path) -> str:
    """A path for humans: relative to the project root when it lies beside it (e.g. ../shared/data/mnist)."""
    try:
        return os.path.relpath(path, PROJECT_ROOT)
    except ValueError:
        return str(path)


def is_offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no") for var in OFFLINE_ENV_VARS)


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection opens within `timeout` seconds; DNS is bounded too (it runs in a thread)."""
    import socket

    outcome = []

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


def save_cached_arrays(stem: Path, arrays: dict[str, np.ndarray], meta: dict) -> bool:
    """Store `stem.<key>.npy` for each array, then `stem.json` last: the JSON marks a complete cache entry.

    A cache that cannot be written (read-only home, full disk) only costs time, so it warns instead of failing.
    """
    try:
        stem.with_name(f"{stem.name}.json").unlink(missing_ok=True)
        for key, array in arrays.items():
            target = stem.with_name(f"{stem.name}.{key}.npy")
            atomic_write(target, lambda s, a=array: np.save(s, a, allow_pickle=False))
        meta = {**meta, "arrays": {k: [list(a.shape), str(a.dtype)] for k, a in arrays.items()}}
        atomic_write(stem.with_name(f"{stem.name}.json"), json.dumps(meta, indent=1))
        return True
    except OSError as exc:
        warnings.warn(f"could not write the data cache at {stem.parent} ({exc}); data will be decoded again next time",
                      stacklevel=2)
        return False


def load_cached_arrays(stem: Path, meta: dict) -> dict[str, np.ndarray] | None:
    """The cached arrays when the entry is complete, matches `meta` and has the recorded shapes; else None."""
    try:
        stored = json.loads(stem.with_name(f"{stem.name}.json").read_text())
        if any(stored.get(k) != v for k, v in meta.items()):
            return None
        arrays = {}
        for key, (shape, dtype) in stored["arrays"].items():
            array = np.load(stem.with_name(f"{stem.name}.{key}.npy"), allow_pickle=False)
            if list(array.shape) != shape or str(array.dtype) != dtype:
                return None
            arrays[key] = array
        return arrays
    except (OSError, ValueError, KeyError, TypeError):
        return None
