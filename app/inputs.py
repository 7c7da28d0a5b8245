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
# how the preview note names each fit of an upload (ssm_lab.image_fit.FITS)
FIT_NOTES = {"digit": "framed as a digit", "squash": "used as it is (squashed)", "crop": "centre-cropped"}
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


def upload_image(path, channels: int, size: int, fit: str = "auto", model_dataset: str | None = None) -> np.ndarray:
    """An uploaded file as the model sees it; `fit` as in ssm_lab.image_fit.FITS (auto: a digit for MNIST)."""
    from ssm_lab.digit_framing import NoDigitError
    from ssm_lab.image_fit import FITS, fit_image

    if not path:
        raise LimitError("no uploaded image: drop a PNG, JPEG, BMP, GIF, TIFF or WebP file on the upload box, "
                         "or take one with the webcam or paste one from the clipboard")
    path = Path(path)
    if path.is_file() and path.stat().st_size > LIMITS.upload_bytes:
        raise LimitError(f"the upload is {path.stat().st_size / 2**20:.1f} MB; this server accepts up to "
                         f"{LIMITS.upload_bytes / 2**20:.0f} MB (SSM_LAB_MAX_UPLOAD_BYTES)")
    try:
        return fit_image(path, channels, size, fit, model_dataset)
    except NoDigitError as exc:
        raise NoDigitError(f"{exc}; or choose '{FITS['squash']}'") from None


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


def model_input(source: str, channels: int, size: int, *, dataset: str = opening.DATASET, index=0, upload=None,
                sketch=None, model_dataset: str | None = None, fit: str = "auto") -> tuple[np.ndarray, int | None, str]:
    """uint8 (channels, size, size) the model sees, the true label when known for this model, and a description.

    A test image keeps its label only when it comes from the model's own dataset; otherwise the attack
    uses the model's clean prediction as the label. `fit` says how an upload becomes the model's square."""
    from ssm_lab.digit_framing import NoDigitError
    from ssm_lab.image_fit import fit_image, resolve_fit
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
        how = FIT_NOTES[resolve_fit(fit, channels, model_dataset)]
        return (upload_image(upload, channels, size, fit, model_dataset), None,
                f"uploaded image, {how}; label: the model's clean prediction")
    drawn = sketch_array(sketch)
    if drawn is None:
        raise LimitError("the drawing is empty: draw a digit on the sketchpad first")
    try:
        digit = fit_image(drawn, channels, size, "auto", model_dataset)
    except NoDigitError as exc:
        raise LimitError(f"the drawing is empty: draw a digit first ({exc})") from None
    return digit, None, "drawing; label: the model's clean prediction"


def display(arr_or_tensor, side: int = PREVIEW_SIDE) -> np.ndarray:
    """uint8 (C, S, S) array or float tensor in [0, 1] -> HxWx3 uint8, enlarged without smoothing."""
    from ssm_lab.images import to_display, to_tensor

    x = to_tensor(arr_or_tensor) if isinstance(arr_or_tensor, np.ndarray) else arr_or_tensor
    return to_display(x, scale=max(1, side // x.shape[-1]))
