"""Digit framing (ssm_lab.digit_framing) and the image fits: shape, range, centring, aspect, refusals, cost."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ssm_lab.digit_framing import WORK_SIDE, NoDigitError, frame_digit, ink_coverage, otsu_threshold
from ssm_lab.image_fit import fit_image, resolve_fit
from ssm_lab.images import ImageInputError
from testkit.drawn_digits import draw_digit
from testkit.photo_digits import make_corpus

ONE = [(140, 40), (140, 240)]  # a vertical bar: 200 tall on the 280 canvas


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.open(io.BytesIO(make_corpus(1, seed=3)[0].jpeg))


def ink_box(digit: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(digit > 0)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_a_framed_photo_is_a_28x28_uint8_image(photo):
    digit = frame_digit(photo)
    assert digit.shape == (1, 28, 28), digit.shape
    assert digit.dtype == np.uint8, digit.dtype


def test_a_framed_photo_is_white_ink_on_black_at_full_range(photo):
    digit = frame_digit(photo)[0]
    assert digit.max() == 255, digit.max()
    border = np.concatenate([digit[:3].ravel(), digit[-3:].ravel(), digit[:, :3].ravel(), digit[:, -3:].ravel()])
    assert border.max() == 0, f"the frame's 3-pixel margin has ink up to {border.max()}"


def test_the_digit_is_centred_by_its_mass(photo):
    cy, cx = ndimage.center_of_mass(frame_digit(photo)[0].astype(float))
    assert abs(cy - 13.5) <= 0.75, (cy, cx)
    assert abs(cx - 13.5) <= 0.75, (cy, cx)


def test_the_digit_fills_20_pixels_keeping_its_aspect():
    wide = draw_digit([(40, 120), (240, 120)], width=50)  # 250 x 50 with its round caps: aspect 5
    height, width = ink_box(frame_digit(Image.fromarray(wide))[0])
    assert width == 20, width
    assert 3 <= height <= 6, f"a 5:1 stroke became {width}x{height}"


def test_a_tall_digit_is_20_pixels_tall():
    height, width = ink_box(frame_digit(Image.fromarray(draw_digit(ONE, width=30)))[0])
    assert height == 20, height
    assert width < 8, width


def test_dark_ink_and_light_ink_give_the_same_digit(photo):
    grey = photo.convert("L")
    dark, light = frame_digit(grey)[0], frame_digit(Image.fromarray(255 - np.asarray(grey)))[0]
    assert np.abs(dark.astype(int) - light.astype(int)).mean() < 8, np.abs(dark.astype(int) - light).mean()


def test_a_transparent_canvas_reads_its_strokes_like_a_white_one():
    white = frame_digit(Image.fromarray(draw_digit(background="white")))[0]
    clear = frame_digit(Image.fromarray(draw_digit(background="transparent")))[0]
    assert np.abs(white.astype(int) - clear.astype(int)).mean() < 4, np.abs(white.astype(int) - clear).mean()


def test_mnist_digits_uploaded_as_they_are_stay_themselves():
    from testkit.photo_digits import mnist_test_digits

    digits = mnist_test_digits()[0][::10]  # (100, 28, 28) white on black, already framed the MNIST way
    correlations = []
    for digit in digits:
        framed = frame_digit(Image.fromarray(digit))[0]
        # a one-pixel shift of a thin stroke decorrelates raw pixels; compare the shapes at a slight blur
        a, b = (ndimage.gaussian_filter(v.astype(float), 1.0).ravel() for v in (framed, digit))
        correlations.append(np.corrcoef(a, b)[0, 1])
    assert np.mean(correlations) > 0.8, f"mean correlation {np.mean(correlations):.3f} over {len(digits)} digits"


@pytest.mark.parametrize("value", [0, 128, 255])
def test_a_uniform_image_says_no_digit_found(value):
    with pytest.raises(NoDigitError, match="no digit found"):
        frame_digit(Image.new("L", (200, 150), value))


def test_a_noise_only_image_says_no_digit_found():
    noise = np.random.default_rng(0).normal(180, 25, (240, 320)).clip(0, 255).astype(np.uint8)
    with pytest.raises(NoDigitError, match="no digit found"):
        frame_digit(Image.fromarray(noise))


def test_a_noise_only_image_is_a_refusal_the_app_shows():
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(ImageInputError, match="no digit found"):
        fit_image(noise, 1, 28)


def test_a_huge_photo_is_analysed_at_a_bounded_size(photo):
    huge = photo.resize((6000, 4500), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    huge.save(buffer, format="JPEG", quality=80)
    t0 = time.perf_counter()
    digit = fit_image(buffer.getvalue(), 1, 28)
    seconds = time.perf_counter() - t0
    assert digit.shape == (1, 28, 28), digit.shape
    assert seconds < 5.0, f"framing a 27-megapixel JPEG took {seconds:.1f} s"
    assert max(ink_coverage(huge).shape) <= WORK_SIDE, ink_coverage(huge).shape


def test_a_fine_pen_is_thickened_to_mnist_weight():
    thin = frame_digit(Image.fromarray(draw_digit(side=1000, width=2)))[0]
    normal = frame_digit(Image.fromarray(draw_digit(side=280, width=20)))[0]
    assert thin.astype(float).sum() > 0.6 * normal.astype(float).sum(), (thin.sum(), normal.sum())


def test_otsu_separates_two_clusters():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.02, 900), rng.normal(0.7, 0.05, 100)]).clip(0, 1)
    assert 0.2 < otsu_threshold(values) < 0.6, otsu_threshold(values)


@pytest.mark.parametrize("dataset, channels, expected", [("mnist", 1, "digit"), (None, 1, "digit"),
                                                         ("cifar10", 3, "squash")])
def test_auto_frames_digits_for_mnist_models_only(dataset, channels, expected):
    assert resolve_fit("auto", channels, dataset) == expected


def test_digit_framing_is_refused_for_a_colour_model():
    with pytest.raises(ImageInputError, match="one-channel"):
        resolve_fit("digit", 3, "cifar10")


def test_an_unknown_fit_is_refused_naming_the_choices():
    with pytest.raises(ImageInputError, match="auto, digit, squash, crop"):
        resolve_fit("stretch", 1, "mnist")


def test_centre_crop_keeps_the_middle_and_squash_keeps_everything():
    wide = np.zeros((32, 96, 3), dtype=np.uint8)
    wide[:, :32] = (255, 0, 0)  # red left third, black middle, blue right third
    wide[:, 64:] = (0, 0, 255)
    crop, squash = fit_image(wide, 3, 32, "crop"), fit_image(wide, 3, 32, "squash")
    assert crop.max() == 0, f"the centre crop kept colour up to {crop.max()}"
    assert squash[0, :, :8].min() > 200, squash[0, :, :8].min()
