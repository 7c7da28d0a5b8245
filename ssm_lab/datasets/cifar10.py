"""CIFAR-10 from a data folder's JPEG zips (train/<class>/<NNNN>.jpg): decoded once, cached as .npy outside the repo."""
from __future__ import annotations

import io
import multiprocessing
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .base import (
    CIFAR10_CLASSES,
    CorruptDataError,
    cache_dir,
    dataset_dir,
    load_cached_arrays,
    save_cached_arrays,
)

SIDE = 32
MAX_MEMBER_BYTES = 1 << 20  # a 32x32 JPEG is about 1 KB; anything far larger is not CIFAR-10
CHUNK = 2_500
PARALLEL_FROM = 10_000  # below this, starting worker processes costs more than it saves
CACHE_FORMAT = 1


def list_members(zip_path: Path) -> tuple[list[str], np.ndarray]:
    """Image entries sorted by (class, file name) and their labels; the class is the entry's parent folder."""
    entries = []
    with _open_zip(zip_path) as archive:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if info.is_dir() or parts[0] == "__MACOSX" or parts[-1].startswith("."):
                continue
            if len(parts) < 2 or parts[-2] not in CIFAR10_CLASSES:
                raise CorruptDataError(f"{zip_path}: entry {info.filename!r} is not inside a CIFAR-10 class folder")
            if info.file_size > MAX_MEMBER_BYTES:
                raise CorruptDataError(f"{zip_path}: entry {info.filename!r} is {info.file_size} bytes, too large "
                                       "for a 32x32 image")
            entries.append((CIFAR10_CLASSES.index(parts[-2]), parts[-1], info.filename))
    if not entries:
        raise CorruptDataError(f"{zip_path}: holds no images")
    entries.sort()
    return [name for _, _, name in entries], np.array([label for label, _, _ in entries], dtype=np.int64)


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise CorruptDataError(f"{zip_path}: not a readable zip file ({exc})") from exc


def decode_members(archive: zipfile.ZipFile, names: list[str]) -> np.ndarray:
    """Decode the named 32x32 images of an open zip to (N, 3, 32, 32) uint8."""
    images = np.empty((len(names), SIDE, SIDE, 3), dtype=np.uint8)  # (N, S, S, 3) as Pillow lays pixels out
    for i, name in enumerate(names):
        try:
            with Image.open(io.BytesIO(archive.read(name))) as image:
                if image.size != (SIDE, SIDE):
                    raise CorruptDataError(f"{archive.filename}: {name} is {image.size}, expected 32x32")
                images[i] = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise CorruptDataError(f"{archive.filename}: cannot decode {name} ({exc})") from exc
    return images.transpose(0, 3, 1, 2)  # (N, 3, S, S)


_worker_archives: dict[Path, zipfile.ZipFile] = {}


def _decode_in_worker(zip_path: Path, names: list[str]) -> np.ndarray:
    # opening a 50,000-entry zip parses its whole directory (about a second), so each worker does it once
    if zip_path not in _worker_archives:
        _worker_archives[zip_path] = _open_zip(zip_path)
    return decode_members(_worker_archives[zip_path], names)


def decode_zip(zip_path: Path, names: list[str], workers: int | None = None, desc: str = "") -> np.ndarray:
    """Decode all images with a tqdm bar, in `workers` processes (default: see `default_workers`)."""
    workers = default_workers(len(names)) if workers is None else workers
    chunks = [names[start: start + CHUNK] for start in range(0, len(names), CHUNK)]
    decoded = []
    with tqdm(total=len(names), desc=desc or f"decoding {zip_path.name}", unit="img", leave=False) as bar:
        if workers <= 1:
            with _open_zip(zip_path) as archive:
                for chunk in chunks:
                    decoded.append(decode_members(archive, chunk))
                    bar.update(len(chunk))
        else:
            # fork keeps start-up cheap (no re-import of torch in the workers); elsewhere use the default
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
                for chunk, images in zip(chunks, pool.map(_decode_in_worker, [zip_path] * len(chunks), chunks)):
                    decoded.append(images)
                    bar.update(len(chunk))
    return np.concatenate(decoded)


def cached_split(zip_path: Path, split: str, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one zip, decoded on the first call only."""
    stat = zip_path.stat()
    meta = {"format": CACHE_FORMAT, "zip_bytes": stat.st_size, "zip_mtime_ns": stat.st_mtime_ns}
    stem = cache_dir() / "cifar10" / split
    cached = load_cached_arrays(stem, meta)
    if cached is not None and _valid(cached["images"], cached["labels"]):
        return cached["images"], cached["labels"]
    names, labels = list_members(zip_path)
    images = decode_zip(zip_path, names, workers, desc=f"decoding CIFAR-10 {split} (once)")
    save_cached_arrays(stem, {"images": images, "labels": labels}, meta)
    return images, labels


def _valid(images: np.ndarray, labels: np.ndarray) -> bool:
    return (images.ndim == 4 and images.shape[1:] == (3, SIDE, SIDE) and images.dtype == np.uint8
            and labels.shape == images.shape[:1] and labels.dtype == np.int64 and len(labels) > 0
            and labels.min() >= 0 and labels.max() < len(CIFAR10_CLASSES))


def default_workers(count: int) -> int:
    """Two decoding processes on a large zip when two cores are idle; measured slower than one on a busy machine."""
    if count < PARALLEL_FROM or not hasattr(os, "getloadavg"):
        return 1
    idle = (os.cpu_count() or 1) - os.getloadavg()[0]
    return 2 if idle >= 1.5 else 1


def folder_split(root: Path, split: str, workers: int | None = None) -> tuple[np.ndarray, np.ndarray, Path] | str:
    """The whole training or test set from a data folder's JPEG zip (`root/cifar10/` or `root`), or where it was
    looked for; the caller carves validation images from the training set."""
    zip_path = dataset_dir(root, "cifar10") / ("test.zip" if split == "test" else "train.zip")
    if not zip_path.is_file():
        return f"no {zip_path}"
    return (*cached_split(zip_path, "test" if split == "test" else "train", workers), zip_path)
