"""ImageFolder-style directories (root/<class>/<image>) in any common format, with bounded counts and sizes."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .base import SPLITS, DataError, DatasetNotFoundError, ImageDataset, describe_path

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
MAX_IMAGES = 20_000
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # width x height read from the header, before any pixel is decoded
BACKGROUND = (255, 255, 255)  # transparent pixels become white, as image viewers show them


def convert_image(image, channels: int, image_size: int) -> np.ndarray:
    """A Pillow image or uint8 array -> (channels, image_size, image_size) uint8: centre crop to square, resize."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(_as_uint8(image))
    image = ImageOps.exif_transpose(image)
    image = _eight_bit(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        image.alpha_composite(rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (image_size, image_size):
        image = ImageOps.fit(image, (image_size, image_size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)  # (C, S, S)


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating) and array.min() >= 0 and array.max() <= 1:
        return np.rint(array * 255).astype(np.uint8)
    raise ValueError(f"arrays must be uint8 or float in [0, 1], got {array.dtype}")


def _eight_bit(image: Image.Image) -> Image.Image:
    # Pillow's own conversion of 16-bit and float images clips at 255 instead of rescaling
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64)
        scale = 257.0 if image.mode.startswith("I;16") or values.max() > 255 else 1.0
        return Image.fromarray(np.clip(np.rint(values / scale), 0, 255).astype(np.uint8))
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        values = values * 255 if values.max() <= 1 else values
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    return image


def _class_root(root: Path, split: str) -> Path:
    """`root/<split>/` when the folder is split into train/val/test; otherwise `root` serves the test split only."""
    split_dirs = [name for name in SPLITS if (root / name).is_dir()]
    if split_dirs:
        if split not in split_dirs:
            raise DatasetNotFoundError(f"{root} has {'/'.join(split_dirs)} subfolders but no {split}/")
        return root / split
    if split != "test":
        raise DataError(f"{root} has no train/val/test subfolders, so it is used as a test set only; "
                        f"create {root}/train/<class>/... and {root}/val/<class>/... to use it for {split!r}")
    return root


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "__"))


def list_images(class_root: Path, classes: Sequence[str] | None, max_images: int) -> tuple[list, list[str]]:
    """[(path, label)] sorted by class then path, and the class names; refuses more than `max_images` files."""
    folders = sorted(p.name for p in class_root.iterdir() if p.is_dir() and _visible(p))
    if not folders:
        raise DatasetNotFoundError(f"{class_root} has no class subfolders (expected <root>/<class>/<image>)")
    if classes is None:
        classes = folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataError(f"{class_root}: folders {unknown} are not among the classes {list(classes)}")
    resolved_root = class_root.resolve()
    entries = []
    for folder in folders:
        for path in sorted((class_root / folder).rglob("*")):
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not _visible(path) or not path.is_file():
                continue
            # a symlink may not lead outside the dataset (uploaded archives can carry such links)
            if not path.resolve().is_relative_to(resolved_root):
                continue
            entries.append((path, list(classes).index(folder)))
            if len(entries) > max_images:
                raise DataError(f"{class_root} holds more than {max_images:,} images; raise max_images or use "
                                "a smaller folder")
    return entries, list(classes)


def _read(path: Path, channels: int, image_size: int, max_file_bytes: int, max_pixels: int) -> np.ndarray:
    size = path.stat().st_size
    if size > max_file_bytes:
        raise DataError(f"{size:,} bytes, over the {max_file_bytes:,}-byte limit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DataError(f"{width}x{height} pixels, over the {max_pixels:,}-pixel limit")
            image.load()
            return convert_image(image, channels, image_size)


def load_folder(root, split: str = "test", *, channels: int, image_size: int, classes: Sequence[str] | None = None,
                max_images: int = MAX_IMAGES, max_file_bytes: int = MAX_FILE_BYTES,
                max_pixels: int = MAX_PIXELS) -> ImageDataset:
    """Every readable image under root[/split]/<class>/; unreadable or oversized files are skipped and reported."""
    if not 4 <= image_size <= 512:
        raise ValueError(f"image_size must be in [4, 512], got {image_size}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    class_root = _class_root(root, split)
    entries, class_names = list_images(class_root, classes, max_images)
    images, labels, skipped = [], [], []
    for path, label in entries:
        try:
            images.append(_read(path, channels, image_size, max_file_bytes, max_pixels))
            labels.append(label)
        except (DataError, OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombWarning,
                Image.DecompressionBombError) as exc:
            skipped.append(f"{path.relative_to(class_root)}: {exc}")
    if not images:
        detail = f" ({len(skipped)} unreadable: {skipped[0]})" if skipped else ""
        raise DataError(f"{class_root}: no readable images{detail}")
    warning = None
    if skipped:
        listed = "; ".join(skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
        warning = f"skipped {len(skipped)} of {len(entries)} files: {listed}"
    source = (f"image folder {describe_path(class_root)} ({len(images)} images, converted to {channels} "
              f"channel{'s' if channels > 1 else ''} at {image_size}x{image_size})")
    return ImageDataset(np.stack(images), np.array(labels, dtype=np.int64), class_names, "folder", split, source,
                        warning)
