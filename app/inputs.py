"""The image a request attacks: a test-set image, an upload or a drawing, converted to exactly what the model sees."""
from __future__ import annotations

import functools
import secrets
from pathlib import Path

import numpy as np

from . import opening
from .limits import LIMITS, LimitError, as_int


def _menu() -> dict[str, str]:
    from ssm_lab.datasets.info import DATASETS as INFO
    from ssm_lab.datasets.info import MODEL_DATASETS

    return {INFO[name].display_name: name for name in MODEL_DATASETS}


DATASETS = _menu()  # display name -> dataset key, e.g. {"MNIST": "mnist", "CIFAR-10": "cifar10"}
SOURCES = ("dataset", "upload", "drawing")
PREVIEW_SIDE = 224  # displayed pixels per side; nearest-neighbour so every model pixel stays a visible square


@functools.lru_cache(maxsize=2)
def load_test_split(dataset: str):
    """The test split of a built-in dataset, loaded once per process."""
    from ssm_lab.data import load_dataset

    key = DATASETS.get(dataset, dataset)
    if key not in DATASETS.values():
        raise LimitError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return load_dataset(key, "test")


def class_names(dataset: str) -> list[str]:
    from ssm_lab.data import dataset_info

    return list(dataset_info(DATASETS.get(dataset, dataset)).classes)


def first_of_class(dataset: str, class_name: str | None) -> int:
    """Index of the first test image of a class ('any' keeps index 0)."""
    from ssm_lab.data import class_indices

    if not class_name or class_name == "any":
        return 0
    found = class_indices(load_test_split(dataset), class_name)
    if len(found) == 0:
        raise LimitError(f"the {dataset} test set has no image of class {class_name!r}")
    return int(found[0])


def random_index(dataset: str, class_name: str | None = None, rng: np.random.Generator | None = None) -> int:
    """A random test image, of `class_name` when one is chosen."""
    from ssm_lab.data import class_indices

    ds = load_test_split(dataset)
    rng = rng or np.random.default_rng(secrets.randbits(64))
    pool = class_indices(ds, class_name) if class_name and class_name != "any" else np.arange(len(ds))
    return int(rng.choice(pool))


def dataset_image(dataset: str, index) -> tuple[np.ndarray, int, str]:
    """uint8 (C, S, S), its label and a description."""
    ds = load_test_split(dataset)
    i = as_int("index", index, 0, len(ds) - 1)
    label = int(ds.labels[i])
    return ds.images[i], label, f"{dataset} test image #{i} (class {ds.classes[label]}) of the {ds.source}"


def upload_image(path, channels: int, size: int) -> np.ndarray:
    from ssm_lab.images import load_image

    if not path:
        raise LimitError("no uploaded image: drop a PNG, JPEG, BMP, GIF, TIFF or WebP file on the upload box")
    path = Path(path)
    if path.is_file() and path.stat().st_size > LIMITS.upload_bytes:
        raise LimitError(f"the upload is {path.stat().st_size / 2**20:.1f} MB; this server accepts up to "
                         f"{LIMITS.upload_bytes / 2**20:.0f} MB (SSM_LAB_MAX_UPLOAD_BYTES)")
    return load_image(path, channels, size)


def sketch_array(sketch) -> np.ndarray | None:
    """The drawn picture of a Sketchpad/ImageEditor value as a uint8 HxW(xC) array, or None when empty."""
    if sketch is None:
        return None
    value = sketch.get("composite") if isinstance(sketch, dict) else sketch
    if value is None:
        return None
    if not isinstance(value, np.ndarray):  # the sketchpad hands over arrays; anything else is not a drawing
        raise LimitError("the drawing must be an image array (the sketchpad's value)")
    arr = value
    if arr.ndim not in (2, 3) or max(arr.shape[:2]) > LIMITS.sketch_side:
        raise LimitError(f"the drawing must be an image of at most {LIMITS.sketch_side} pixels per side")
    return arr


def drawing_to_digit(arr: np.ndarray, size: int = 28) -> np.ndarray:
    """A drawing (any colours, light or dark background) -> MNIST-style uint8 (1, size, size).

    MNIST digits are white on black, fitted into a 20x20 box and centred by their centre of mass;
    drawings need the same framing or a digit classifier sees an unfamiliar picture."""
    from PIL import Image

    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 4:  # strokes on a transparent canvas: the alpha is the ink
        alpha = arr[..., 3].astype(np.float64) / 255
        rgb = arr[..., :3].astype(np.float64)
        gray = (rgb.mean(axis=2) * alpha + 255 * (1 - alpha))  # composited on white
    elif arr.ndim == 3:
        gray = arr[..., :3].astype(np.float64).mean(axis=2)
    else:
        gray = arr.astype(np.float64)
    if gray.mean() > 127:  # dark ink on a light background
        gray = 255 - gray
    ink = gray > 30
    if not ink.any():
        raise LimitError("the drawing is empty: draw a digit first")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    box = round(size * 20 / 28)
    h, w = crop.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize((new_w, new_h), Image.Resampling.LANCZOS),
                       dtype=np.float64)
    canvas = np.zeros((size, size))
    total = small.sum()
    cy = (np.arange(new_h) @ small.sum(axis=1)) / total if total else new_h / 2
    cx = (np.arange(new_w) @ small.sum(axis=0)) / total if total else new_w / 2
    top = int(np.clip(round(size / 2 - cy), 0, size - new_h))
    left = int(np.clip(round(size / 2 - cx), 0, size - new_w))
    canvas[top:top + new_h, left:left + new_w] = small
    return np.clip(canvas, 0, 255).astype(np.uint8)[None]  # (1, S, S)


def model_input(source: str, channels: int, size: int, *, dataset: str = opening.DATASET, index=0, upload=None,
                sketch=None, model_dataset: str | None = None) -> tuple[np.ndarray, int | None, str]:
    """uint8 (channels, size, size) the model sees, the true label when known for this model, and a description.

    A test image keeps its label only when it comes from the model's own dataset; otherwise the attack
    uses the model's clean prediction as the label."""
    from ssm_lab.images import load_image

    if source not in SOURCES:
        raise LimitError(f"image source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "dataset":
        arr, label, text = dataset_image(dataset, index)
        same = model_dataset == DATASETS.get(dataset, dataset)
        if tuple(arr.shape) != (channels, size, size):
            arr = load_image(np.ascontiguousarray(arr.transpose(1, 2, 0)), channels, size)
            text += f", converted to {channels}x{size}x{size}"
        return arr, (label if same else None), text + ("" if same else "; label: the model's clean prediction")
    if source == "upload":
        return upload_image(upload, channels, size), None, "uploaded image; label: the model's clean prediction"
    drawn = sketch_array(sketch)
    if drawn is None:
        raise LimitError("the drawing is empty: draw a digit on the sketchpad first")
    if channels == 1:
        digit = drawing_to_digit(drawn, size)
    else:
        digit = load_image(drawn, channels, size)
    return digit, None, "drawing; label: the model's clean prediction"


def display(arr_or_tensor, side: int = PREVIEW_SIDE) -> np.ndarray:
    """uint8 (C, S, S) array or float tensor in [0, 1] -> HxWx3 uint8, enlarged without smoothing."""
    from ssm_lab.images import to_display, to_tensor

    x = to_tensor(arr_or_tensor) if isinstance(arr_or_tensor, np.ndarray) else arr_or_tensor
    return to_display(x, scale=max(1, side // x.shape[-1]))
