"""Untrusted image input: every common format becomes exactly (C, S, S) uint8, bad files get specific errors."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from ssm_lab.images import ImageInputError, load_image, perturbation_display, to_display, to_model_array, to_tensor


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


rng = np.random.default_rng(0)
RGB = Image.fromarray((rng.random((37, 23, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize("data", [
    _bytes(RGB, "PNG"), _bytes(RGB, "JPEG"), _bytes(RGB, "BMP"), _bytes(RGB, "GIF"), _bytes(RGB, "WEBP"),
    _bytes(RGB.convert("L"), "PNG"), _bytes(RGB.convert("RGBA"), "PNG"), _bytes(RGB.convert("CMYK"), "JPEG"),
    _bytes(RGB.convert("P"), "PNG", transparency=0), _bytes(RGB.convert("1"), "PNG"),
    _bytes(Image.fromarray((rng.random((9, 9)) * 65535).astype(np.uint16)), "PNG"),
    _bytes(RGB, "TIFF"), _bytes(Image.new("RGB", (1, 1)), "PNG"),
])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_formats_convert_to_model_input(data, channels, size):
    arr = load_image(data, channels, size)
    assert arr.shape == (channels, size, size)
    assert arr.dtype == np.uint8


def test_exif_rotation_is_applied():
    img = Image.new("L", (40, 20), 0)
    img.paste(255, (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    arr = load_image(_bytes(img, "JPEG", exif=exif.tobytes()), 1, 20)
    # after rotation the white half is on top
    assert arr[0, :8].mean() > 200
    assert arr[0, -8:].mean() < 50


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(_bytes(img, "PNG"), 1, 4).min() == 255


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"GIF89a" + b"\x00" * 10, "not a readable image|corrupt"),
    (b"%PDF-1.4 not an image", "not a readable image"),
    (_bytes(RGB, "PNG")[:60], "corrupt or truncated|not a readable"),
])
def test_bad_files_are_refused_specifically(data, message):
    with pytest.raises(ImageInputError, match=message):
        load_image(data, 1, 28)


def test_decompression_bomb_is_refused_before_decoding():
    import struct
    import zlib

    data = bytearray(_bytes(Image.new("L", (8, 8)), "PNG"))
    ihdr = bytearray(data[12:29])  # chunk type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", 20000, 20000)  # claim 20000 x 20000 pixels
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    data = bytes(data)
    with pytest.raises(ImageInputError, match="limit is"):
        load_image(data, 1, 28)


def test_arrays_and_display_helpers():
    arr = to_model_array(np.full((5, 5, 3), 0.5), 3, 5)
    assert arr.shape == (3, 5, 5)
    assert abs(int(arr[0, 0, 0]) - 128) <= 1
    with pytest.raises(ImageInputError, match="NaN"):
        to_model_array(np.full((5, 5), np.nan), 1, 5)
    x = to_tensor(arr)
    assert x.shape == (1, 3, 5, 5)
    assert 0 <= x.min()
    assert x.max() <= 1
    assert to_display(x, scale=2).shape == (10, 10, 3)
    d = perturbation_display(torch.tensor([[[0.1, -0.1], [0.0, 0.05]]]))
    assert d.shape == (2, 2, 3)
    assert tuple(d[1, 0]) == (255, 255, 255)
