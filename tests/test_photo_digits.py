"""Issue 13's acceptance for uploads of real digits: the shipped standard MNIST models read photographed and drawn
digits through the app's upload path (testkit.photo_digits photographs MNIST test digits of the bundled sample)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.handlers import model_x
from app.request_types import ImageChoice
from benchmarks.photo_digits import CHECKPOINTS, STANDARD, accuracy, upload_batch
from ssm_models.hub import load_model
from testkit.drawn_digits import draw_digit, save_drawing
from testkit.photo_digits import make_corpus, write_corpus

CORPUS_SIZE = 120
REQUIRED = 0.90


@pytest.fixture(scope="module")
def models() -> dict:
    loaded = {name: load_model(CHECKPOINTS / name) for name in STANDARD}
    for model in loaded.values():
        model.eval()
    return loaded


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[list[str], np.ndarray]:
    corpus = make_corpus(CORPUS_SIZE, seed=0)
    paths = write_corpus(corpus, tmp_path_factory.mktemp("photos"))
    return [str(p) for p in paths], np.array([item.label for item in corpus])


@pytest.fixture(scope="module")
def framed(models, photos) -> torch.Tensor:
    # the five models share their input (1x28x28, dataset mnist), so the upload path runs once for all of them
    configs = {(m.config.in_channels, m.config.image_size, m.config.meta.get("dataset")) for m in models.values()}
    assert configs == {(1, 28, "mnist")}, configs
    return upload_batch(next(iter(models.values())), photos[0], "auto")


@pytest.mark.parametrize("name", STANDARD)
def test_standard_mnist_models_read_nine_in_ten_photographed_digits(name, models, photos, framed):
    acc = accuracy(models[name], framed, photos[1])
    assert acc >= REQUIRED, f"{name} read {acc:.1%} of {CORPUS_SIZE} photographed digits"


def test_the_photo_check_can_fail_the_image_as_it_is_reads_near_chance(models, photos):
    model = models["mnist-s4-st"]
    acc = accuracy(model, upload_batch(model, photos[0], "squash"), photos[1])
    assert acc < 0.3, f"dark digits on paper, squashed without framing, read {acc:.1%}"


@pytest.mark.parametrize("background", ["white", "transparent"])
@pytest.mark.parametrize("name", STANDARD)
def test_a_drawn_seven_uploaded_as_a_png_reads_seven(name, background, models, tmp_path):
    path = save_drawing(tmp_path / "seven.png", background=background)
    x = model_x(models[name], ImageChoice(source="upload", upload=path))[0]
    with torch.no_grad():
        assert int(models[name](x).argmax()) == 7


@pytest.mark.parametrize("background", ["white", "transparent"])
def test_a_seven_drawn_on_the_sketchpad_reads_seven(background, models):
    sketch = {"composite": draw_digit(background=background)}
    for name, model in models.items():
        x = model_x(model, ImageChoice(source="drawing", sketch=sketch))[0]
        with torch.no_grad():
            prediction = int(model(x).argmax())
        assert prediction == 7, f"{name} read the drawn 7 on {background} as {prediction}"
