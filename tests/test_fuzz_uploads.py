"""Generated uploads (corrupt, truncated, bombs, disguised, awkward formats) are decoded or refused, never crash."""
from __future__ import annotations

import io
import resource
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.inputs import upload_image
from app.limits import LimitError
from ssm_lab.images import ImageInputError, load_image
from testkit.upload_corpus import BOMB_SIDES, BOMBS, CATEGORIES, VALID_CATEGORIES, make_case

SECONDS_PER_CALL = 2.0
SHAPES = st.sampled_from([(1, 28), (3, 32)])
FUZZ = settings(max_examples=180, deadline=int(SECONDS_PER_CALL * 1000), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def decode_or_refuse(call, channels: int, size: int) -> np.ndarray | None:
    """The property: a uint8 (C, size, size) array, or an ImageInputError/LimitError with a specific message."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's corrupt-EXIF warnings are not failures
            arr = call()
    except (ImageInputError, LimitError) as exc:
        assert len(str(exc).strip()) > 10, f"refusal without a specific message: {exc!r}"
        arr = None
    else:
        assert arr.dtype == np.uint8
        assert arr.shape == (channels, size, size)
    assert time.perf_counter() - t0 < SECONDS_PER_CALL
    return arr


@FUZZ
@given(category=st.sampled_from(CATEGORIES), seed=st.integers(0, 2**32 - 1), shape=SHAPES)
def test_generated_bytes_decode_or_refuse(category, seed, shape):
    kind, data = make_case(category, seed)
    arr = decode_or_refuse(lambda: load_image(data, *shape), *shape)
    if category in VALID_CATEGORIES:
        assert arr is not None, f"a well-formed {kind} file was refused"


@settings(FUZZ, max_examples=60)
@given(category=st.sampled_from(CATEGORIES), seed=st.integers(0, 2**32 - 1), shape=SHAPES)
def test_upload_handler_with_png_name_decodes_or_refuses(tmp_path, category, seed, shape):
    _, data = make_case(category, seed)
    path = tmp_path / "photo.png"  # the name claims PNG whatever the bytes are
    path.write_bytes(data)
    decode_or_refuse(lambda: upload_image(str(path), *shape), *shape)


@settings(FUZZ, max_examples=60)
@given(prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00",
                               b"RIFF\x00\x00\x00\x00WEBPVP8 "]),
       body=st.binary(max_size=1024), shape=SHAPES)
def test_arbitrary_bytes_after_a_magic_number_decode_or_refuse(prefix, body, shape):
    decode_or_refuse(lambda: load_image(prefix + body, *shape), *shape)


@pytest.mark.parametrize("kind", sorted(BOMBS))
@pytest.mark.parametrize("side", BOMB_SIDES)
def test_decompression_bombs_are_refused_fast_without_allocating(kind, side):
    data = BOMBS[kind](side, side)
    assert len(data) < 2048  # the file is tiny; only its header claims side x side pixels
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ImageInputError, match="pixels"):
        load_image(data, 3, 32)
    assert time.perf_counter() - t0 < 0.5
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) / 1024
    assert grown_mib < 50  # decoding 20000x20000 RGB would need over 1 GB


@pytest.mark.parametrize("seed", range(8))
def test_awkward_legitimate_formats_decode(seed):
    kind, data = make_case("special", seed)
    arr = load_image(data, 3, 32)
    assert arr.shape == (3, 32, 32), kind
    assert arr.dtype == np.uint8, kind


def test_exif_rotation_is_applied():
    pixels = np.zeros((20, 40), dtype=np.uint8)  # (H, W): black left half, white right half
    pixels[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 3  # rotate 180 degrees on display
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    arr = load_image(buf.getvalue(), 1, 16)[0]  # (16, 16)
    assert arr[:, :6].mean() > 200
    assert arr[:, -6:].mean() < 50


def test_palette_transparency_is_composited_on_white():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] * 256)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)  # every pixel transparent black
    assert (load_image(buf.getvalue(), 1, 8) == 255).all()


def test_sixteen_bit_png_uses_the_full_range():
    deep = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)  # (H, W)
    buf = io.BytesIO()
    Image.fromarray(deep).save(buf, format="PNG")
    arr = load_image(buf.getvalue(), 1, 8)
    assert arr.min() == 0
    assert arr.max() == 255
