"""What each app action answers, by name: one result dataclass per handler, its fields in the order of the page's
output components (`outputs` turns a result into that list for gradio)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

Figure = Any  # a plotly figure, or None when there is nothing to draw
Image = Any  # an (H, W, 3) uint8 array


def outputs(result) -> tuple:
    """The result's fields in order, as gradio's output components take them (no copies, unlike astuple)."""
    return tuple(getattr(result, f.name) for f in fields(result))


@dataclass
class ModelSelection:
    card: str  # the model card, markdown
    eps: str  # its threat model's budget, as the eps field shows it
    classes: list[str]  # the target menu: "none" and the class names
    dataset: str  # menu name of its test set
    curves: Figure  # its training curves


@dataclass
class EvaluationDefaults:
    dataset: str  # menu name of the model's test set
    eps: str  # its threat model's budget, as the eps field shows it
    curve_eps: str  # the accuracy-vs-eps grid for that test set


@dataclass
class Preview:
    image: Image  # what the model sees, enlarged
    note: str


@dataclass
class AttackResult:
    clean: Image
    adversarial: Image
    perturbation: Image  # amplified, red +, blue -
    summary: str  # markdown: predictions, norms, PNG survival, seconds
    topk: Figure
    trace: Figure
    scaling: Figure  # error scaling per layer and component
    tokens: Figure  # error along the sequence
    files: list[str]  # adversarial PNG, lossless NPY, run card
    card: dict  # the run card


@dataclass
class CompareResult:
    gallery: list  # (image, caption): the adversarial image and the perturbation of each model
    table: dict  # {"headers": [...], "data": [[...], ...]}
    scaling: Figure  # error-scaling change rate per component


@dataclass
class TransferResult:
    figure: Figure
    result: dict


@dataclass
class EvaluateResult:
    text: str  # markdown table of clean and robust accuracy
    confusion: Figure
    report_file: str  # the full JSON report
    report: dict  # the report without per-image lists


@dataclass
class CurvesResult:
    figure: Figure
    curves: dict
