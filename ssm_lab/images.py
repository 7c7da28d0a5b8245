"""Untrusted image input -> exactly what the model sees, with bounded cost and specific errors."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ssm_models.errors import UserError

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)
MAX_ARRAY_SIDE = 8192


class ImageInputError(ValueError, UserError):
    """An image that cannot be used, with the reason."""


def _open(data: bytes) -> Image.Image:
    if len(data) == 0:
        raise ImageInputError("the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageInputError(f"the file is {len(data) / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageInputError(f"the image is {w}x{h} pixels; the limit is {MAX_PIXELS:,} pixels")
            img.seek(0)  # first frame of animations
            img.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(f"the image is too large to decode safely; the limit is {MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError as exc:
        raise ImageInputError(f"not a readable image ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise ImageInputError(f"the image data is corrupt or truncated ({exc})") from None
    return img


def upright(img: Image.Image | np.ndarray) -> Image.Image:
    """Any PIL image or array -> a PIL image as the user saw it: EXIF orientation applied, 16-bit and float
    scaled to 8 bits; alpha kept (digit framing reads a transparent canvas, the other fits composite it)."""
    if isinstance(img, np.ndarray):
        img = array_to_pil(img)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to refuse the pixels
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    return img


def to_model_array(img: Image.Image | np.ndarray, channels: int, size: int, crop: bool = False) -> np.ndarray:
    """Any PIL image or array -> uint8 (C, size, size): upright, alpha composited on white, converted to grayscale
    or RGB, resized with antialiasing; squashed to a square, or its centre square cut out first when `crop`."""
    img = upright(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    if crop and img.size[0] != img.size[1]:
        side = min(img.size)
        left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()  # (C, S, S)


def array_to_pil(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 1 or max(arr.shape[:2]) > MAX_ARRAY_SIDE:
        raise ImageInputError(f"expected an HxW or HxWxC image array, got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        raise ImageInputError(f"expected 1, 3 or 4 channels, got {arr.shape[2]}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ImageInputError("the image contains NaN or infinite values")
        arr = np.clip(arr * (255 if arr.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr)


def decode(source: str | Path | bytes | np.ndarray) -> Image.Image | np.ndarray:
    """Path or bytes -> a decoded PIL image (size and pixel count checked first); arrays pass through."""
    if isinstance(source, np.ndarray):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"no such image file: {path}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageInputError(f"{path.name} is larger than {MAX_FILE_BYTES // 2**20} MB")
        source = path.read_bytes()
    return _open(source)


def load_image(source: str | Path | bytes | np.ndarray, channels: int, size: int) -> np.ndarray:
    """Path, bytes or array -> uint8 (C, size, size), squashed to the model's square."""
    return to_model_array(decode(source), channels, size)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 (C, S, S) -> float (1, C, S, S) in [0, 1]."""
    return torch.from_numpy(arr.astype(np.float32) / 255.0)[None]


def to_display(x: torch.Tensor, scale: int = 1) -> np.ndarray:
    """float (C, S, S) or (1, C, S, S) in [0, 1] -> uint8 HxWx3 for display, nearest-neighbour upscaled."""
    x = x.detach().reshape(-1, *x.shape[-2:]).clamp(0, 1)
    arr = (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.kron(arr, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else arr


def perturbation_display(delta: torch.Tensor, scale: int = 1) -> np.ndarray:
    """Signed perturbation (C, S, S) -> RGB map (blue negative, white zero, red positive), amplified to full range."""
    d = delta.detach().reshape(-1, *delta.shape[-2:]).mean(0)  # (S, S)
    m = float(d.abs().max())
    v = (d / m).numpy() if m > 0 else np.zeros(d.shape, dtype=np.float32)
    rgb = np.stack([1 - np.clip(-v, 0, 1), 1 - np.abs(v), 1 - np.clip(v, 0, 1)], axis=-1)
    arr = (rgb * 255).round().astype(np.uint8)
    return np.kron(arr, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else arr
