"""How a user's image becomes the model's square input: framed as a digit, squashed, or its centre cropped."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads FITS for its --fit choices without paying for torch and scipy
    import numpy as np

# the choices a user is offered, each with the sentence that describes it
FITS = {
    "auto": "MNIST models: frame as a digit; CIFAR-10 models: fit (squash)",
    "digit": "frame as a digit (remove the paper, crop to the ink, centre white on black as in MNIST)",
    "squash": "use the image as it is (fit, squashing it to the model's square)",
    "crop": "centre crop (cut out the middle square, then resize)",
}


def resolve_fit(fit: str, channels: int, dataset: str | None = None) -> str:
    """The fit that `auto` means for a model: digit framing for one-channel digit models (MNIST, or a model that
    states no dataset), the plain squash for everything else; other values are checked and returned."""
    from .images import ImageInputError

    if fit not in FITS:
        raise ImageInputError(f"unknown image fit {fit!r}; choose one of {', '.join(FITS)}")
    if fit == "auto":
        return "digit" if channels == 1 and dataset in (None, "mnist") else "squash"
    if fit == "digit" and channels != 1:
        raise ImageInputError("framing as a digit is for one-channel digit models (MNIST); for this model choose "
                              "'squash' (use the image as it is) or 'crop'")
    return fit


def fit_image(source: str | Path | bytes | np.ndarray, channels: int, size: int, fit: str = "auto",
              dataset: str | None = None) -> np.ndarray:
    """Path, bytes or array -> uint8 (channels, size, size) exactly as the model will see it."""
    from .digit_framing import frame_digit
    from .images import decode, to_model_array, upright

    fit = resolve_fit(fit, channels, dataset)
    img = decode(source)
    if fit == "digit":
        return frame_digit(upright(img), size)
    return to_model_array(img, channels, size, crop=fit == "crop")
