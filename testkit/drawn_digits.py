"""Digits drawn the way a user draws them: dark pen lines on a white or transparent canvas."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

# a "7": a top bar and a long diagonal, on a 280x280 canvas as in the app's sketchpad
SEVEN = [(70, 60), (210, 60), (120, 230)]


def draw_digit(strokes=SEVEN, *, background: str = "white", side: int = 280, width: int = 18) -> np.ndarray:
    """(side, side, 4) uint8 RGBA: black lines through `strokes` (points on a 280-pixel canvas), on opaque white
    (background='white') or fully transparent (background='transparent') pixels."""
    if background not in ("white", "transparent"):
        raise ValueError(f"background must be 'white' or 'transparent', got {background!r}")
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255) if background == "white" else (0, 0, 0, 0))
    scale = side / 280
    ImageDraw.Draw(canvas).line([(x * scale, y * scale) for x, y in strokes], fill=(0, 0, 0, 255),
                                width=max(1, round(width * scale)), joint="curve")
    return np.asarray(canvas)


def save_drawing(path, **options) -> str:
    """The drawing as a PNG file (transparency kept), as a user would upload it; returns the path."""
    Image.fromarray(draw_digit(**options)).save(path)
    return str(path)
