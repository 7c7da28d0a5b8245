"""The bundled sample: 100 test images per class of MNIST and CIFAR-10, shipped inside the package for offline use."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..base import CorruptDataError, DatasetNotFoundError

PER_CLASS = 100
SAMPLE_SEED = 0
SAMPLE_DIR = Path(__file__).resolve().parent
SAMPLE_NOTE = "bundled sample"


def sample_path(name: str) -> Path:
    return SAMPLE_DIR / f"{name}-test-sample.npz"


def load_sample(name: str, classes: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, C, S, S) uint8, labels (N,) int64, test-set indices (N,)) of the bundled sample, checked."""
    path = sample_path(name)
    if not path.is_file():
        raise DatasetNotFoundError(f"the bundled {name} sample is missing from this installation ({path.name}); "
                                   "reinstall the package")
    try:
        with np.load(path, allow_pickle=False) as stored:
            images, labels, indices = stored["images"], stored["labels"], stored["indices"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CorruptDataError(f"the bundled {name} sample {path.name} is damaged ({exc}); reinstall the package") \
            from exc
    n = classes * PER_CLASS
    if images.shape != (n, *shape) or images.dtype != np.uint8 or labels.shape != (n,) or indices.shape != (n,):
        raise CorruptDataError(f"the bundled {name} sample holds {images.dtype} {images.shape}, expected uint8 "
                               f"{(n, *shape)} with {n} labels and indices; reinstall the package")
    if np.bincount(labels, minlength=classes).tolist() != [PER_CLASS] * classes:
        raise CorruptDataError(f"the bundled {name} sample does not hold {PER_CLASS} images of each class")
    return images, labels.astype(np.int64), indices.astype(np.int64)
