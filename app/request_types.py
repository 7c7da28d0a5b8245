"""What each app action is asked for, by name: one request dataclass per handler, its fields the API's parameters.

Values come as gradio or an API client sends them (strings, floats from sliders); the handlers check them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import opening


@dataclass(frozen=True, kw_only=True)
class ImageChoice:
    """Which image to attack: a test-set image by index, an uploaded file, or a drawing."""

    source: str = "dataset"  # "dataset", "upload" or "drawing"
    dataset: str = opening.DATASET  # menu name of the test set
    index: Any = 0
    upload: str | None = None  # path of the uploaded file
    sketch: Any = None  # gradio Sketchpad value
    fit: str = "auto"  # how an upload becomes the model's input: a key of ssm_lab.image_fit.FITS


@dataclass(frozen=True, kw_only=True)
class AttackChoice:
    """The attack tab's knobs; `steps` buys queries for Square, `step_size` 0 means the attack's default."""

    attack: str = opening.ATTACK  # a label of the attack menu
    eps: Any = opening.EPS  # a number or k/255
    steps: Any = 10
    step_size: Any = 0
    restarts: Any = 1
    target: Any = "none"  # a class name or index, or "none"
    seed: Any = 0


@dataclass(frozen=True, kw_only=True)
class AttackRequest(AttackChoice, ImageChoice):
    model: str


@dataclass(frozen=True, kw_only=True)
class PreviewRequest(ImageChoice):
    model: str


@dataclass(frozen=True, kw_only=True)
class CostRequest(AttackChoice):
    model: str


@dataclass(frozen=True, kw_only=True)
class CompareRequest(AttackChoice, ImageChoice):
    models: list[str]


@dataclass(frozen=True, kw_only=True)
class TestSetChoice:
    """A seeded, class-stratified sample of test images and the iteration budget of the attacks run on it."""

    dataset: str = opening.DATASET
    n: Any = 64
    steps: Any = 10
    restarts: Any = 1
    seed: Any = 0


@dataclass(frozen=True, kw_only=True)
class TransferRequest(TestSetChoice):
    models: list[str]
    attack: str = opening.ATTACK
    eps: Any = opening.EPS


@dataclass(frozen=True, kw_only=True)
class EvaluateRequest(TestSetChoice):
    model: str
    attacks: list[str]
    eps: Any = opening.EPS


@dataclass(frozen=True, kw_only=True)
class CurvesRequest(TestSetChoice):
    models: list[str]
    attack: str = opening.ATTACK
    eps_values: str = "0, 0.1, 0.2, 0.3"
