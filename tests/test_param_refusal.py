"""Bad numbers (negative, NaN, infinite, absurd, not numbers) are refused with a message naming the parameter,
both by the engine API and by the app's handlers called directly, as an API client bypassing the UI would."""
from __future__ import annotations

import math

import gradio as gr
import pytest
import torch

import ssm_models
from app import compare as C
from app import evaluation as E
from app import handlers as H
from app.request_types import (
    AttackRequest,
    CompareRequest,
    CostRequest,
    CurvesRequest,
    EvaluateRequest,
    TransferRequest,
)
from ssm_lab.attacks import AttackParamError, make_attack
from ssm_lab.evaluate import evaluate
from ssm_models.hub import save_pretrained
from testkit.drawn_digits import save_drawing

TINY = dict(d_model=16, n_layers=1, d_state=8, tokenizer="patch", patch_size=4)
NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ssm_models.create_model("s4", image_size=28, **TINY, meta={"dataset": "mnist", "method": "st"})


@pytest.fixture(scope="module", autouse=True)
def checkpoints(tmp_path_factory, model, serve_checkpoints):
    root = tmp_path_factory.mktemp("checkpoints")
    save_pretrained(model, root / "mnist-s4-st")
    save_pretrained(model, root / "mnist-s4-copy")
    with serve_checkpoints(root):
        yield root


@pytest.fixture(scope="module")
def upload(tmp_path_factory):
    """An uploaded drawing of a digit, so the single-image handlers need no dataset."""
    return save_drawing(tmp_path_factory.mktemp("upload") / "digit.png")


def quiet(*_args, **_kwargs) -> None:
    """Stands in for gr.Progress."""


# ----- engine API ---------------------------------------------------------------------------------
ENGINE_BAD = [
    ("pgd", "eps", -0.1), ("pgd", "eps", NAN), ("pgd", "eps", INF), ("pgd", "eps", 1e9), ("pgd", "eps", "0.3"),
    ("pgd", "steps", -1), ("pgd", "steps", NAN), ("pgd", "steps", INF), ("pgd", "steps", 2.5),
    ("pgd", "steps", 10**12), ("pgd", "steps", True),
    ("pgd", "restarts", 0), ("pgd", "restarts", -3), ("pgd", "restarts", INF), ("pgd", "restarts", 10**9),
    ("pgd", "batch_size", 0), ("pgd", "batch_size", -5), ("pgd", "batch_size", NAN), ("pgd", "batch_size", 10**12),
    ("pgd", "step_size", -0.1), ("pgd", "step_size", NAN), ("pgd", "step_size", INF), ("pgd", "step_size", 0),
    ("pgd", "step_size", 1e9), ("pgd", "seed", -1),
    ("fgsm", "eps", -1), ("apgd-ce", "steps", 0), ("apgd-t", "n_targets", 0), ("apgd-t", "n_targets", 100),
    ("square", "queries", -1), ("square", "queries", 10**12), ("square", "p_init", NAN), ("square", "p_init", 2),
    ("cw-l2", "c", NAN), ("cw-l2", "c", -1), ("cw-l2", "lr", 0), ("cw-l2", "kappa", -1),
    ("deepfool", "overshoot", NAN), ("autoattack", "eps", NAN), ("autoattack", "batch_size", 0),
]


@pytest.mark.parametrize("attack, param, value", ENGINE_BAD)
def test_make_attack_refuses_bad_values(model, attack, param, value):
    with pytest.raises(AttackParamError, match=param):
        make_attack(attack, model, **{param: value})


EVALUATE_BAD = [("eps", NAN), ("eps", -1.0), ("eps", INF), ("batch_size", 0), ("batch_size", -1),
                ("batch_size", NAN), ("batch_size", 2.5), ("seed", -1), ("checks", -1)]


@pytest.mark.parametrize("param, value", EVALUATE_BAD)
def test_evaluate_refuses_bad_values(model, param, value):
    x, y = torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)  # (N, C, S, S), (N,)
    kwargs = {"eps": 0.1, param: value}
    with pytest.raises(AttackParamError, match=param):
        evaluate(model, x, y, [{"name": "fgsm"}], **kwargs)


@pytest.mark.parametrize("spec, param", [({"name": "pgd", "steps": -1}, "steps"),
                                         ({"name": "pgd", "restarts": NAN}, "restarts"),
                                         ({"name": "square", "queries": INF}, "queries")])
def test_evaluate_refuses_bad_attack_specs(model, spec, param):
    x, y = torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)  # (N, C, S, S), (N,)
    with pytest.raises(AttackParamError, match=param):
        evaluate(model, x, y, [spec], eps=0.1)


def test_evaluate_refuses_no_images(model):
    with pytest.raises(AttackParamError, match="no images"):
        evaluate(model, torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), [{"name": "fgsm"}], eps=0.1)


# ----- app handlers, called as an API client would (strings and floats, no slider bounds) ---------
ATTACK_BAD = [
    ("eps", "-0.1", "eps"), ("eps", "nan", "eps"), ("eps", "inf", "eps"), ("eps", "1e9", "eps"),
    ("eps", "abc", "eps"), ("eps", "1/0", "eps"), ("eps", NAN, "eps"),
    ("steps", -1, "steps"), ("steps", 0, "steps"), ("steps", NAN, "steps"), ("steps", INF, "steps"),
    ("steps", 2.5, "steps"), ("steps", 10**9, "steps"), ("steps", "abc", "steps"),
    ("restarts", 0, "restarts"), ("restarts", -3, "restarts"), ("restarts", NAN, "restarts"),
    ("restarts", 10**6, "restarts"),
    ("step_size", -0.5, "step size"), ("step_size", "nan", "step size"), ("step_size", "inf", "step size"),
    ("step_size", 1e9, "step size"), ("step_size", "abc", "step size"),
    ("seed", -1, "seed"), ("seed", NAN, "seed"), ("seed", 2**40, "seed"),
    ("target", "99", "target"), ("target", "-1", "target"),
]


def attack_args(**overrides) -> dict:
    args = dict(attack="PGD (Linf)", eps="0.3", steps=2, step_size=0, restarts=1, target="none", seed=0)
    args.update(overrides)
    return args


@pytest.mark.parametrize("field, value, named", ATTACK_BAD)
def test_run_attack_refuses_bad_values(upload, field, value, named):
    with pytest.raises(gr.Error, match=named):
        H.run_attack(AttackRequest(model="mnist-s4-st", source="upload", upload=upload,
                                   **attack_args(**{field: value})), progress=quiet)


@pytest.mark.parametrize("field, value, named", ATTACK_BAD[::3])
def test_estimate_cost_refuses_bad_values(field, value, named):
    with pytest.raises(gr.Error, match=named):
        H.estimate_cost(CostRequest(model="mnist-s4-st", **attack_args(**{field: value})))


@pytest.mark.parametrize("field, value, named", ATTACK_BAD[1::3])
def test_compare_models_refuses_bad_values(upload, field, value, named):
    with pytest.raises(gr.Error, match=named):
        C.compare_models(CompareRequest(models=["mnist-s4-st", "mnist-s4-copy"], source="upload", upload=upload,
                                        **attack_args(**{field: value})), progress=quiet)


N_BAD = [0, -5, NAN, INF, 2.5, 10**9, "abc"]
BATCH_BAD = [("n", value, "n") for value in N_BAD] + [("eps", "nan", "eps"), ("eps", "-1", "eps"),
                                                      ("steps", -1, "steps"), ("restarts", INF, "restarts"),
                                                      ("seed", -1, "seed")]


def batch_args(**overrides) -> dict:
    args = dict(dataset="MNIST", n=2, eps="0.1", steps=1, restarts=1, seed=0)
    args.update(overrides)
    return args


@pytest.mark.parametrize("field, value, named", BATCH_BAD)
def test_evaluate_model_refuses_bad_values(field, value, named):
    with pytest.raises(gr.Error, match=rf"\b{named}\b"):
        E.evaluate_model(EvaluateRequest(model="mnist-s4-st", attacks=["PGD (Linf)"], **batch_args(**{field: value})),
                         progress=quiet)


@pytest.mark.parametrize("field, value, named", BATCH_BAD[::2])
def test_transfer_refuses_bad_values(field, value, named):
    with pytest.raises(gr.Error, match=rf"\b{named}\b"):
        C.transfer(TransferRequest(models=["mnist-s4-st", "mnist-s4-copy"], attack="PGD (Linf)",
                                   **batch_args(**{field: value})), progress=quiet)


@pytest.mark.parametrize("eps_values", ["nan", "-1", "inf", "0.1, abc", "1/0", "2", "", "1e400",
                                        ", ".join(str(i / 100) for i in range(20))])
def test_eps_curves_refuse_bad_eps_lists(eps_values):
    with pytest.raises(gr.Error, match="eps"):
        E.eps_curves(CurvesRequest(models=["mnist-s4-st"], n=2, attack="PGD (Linf)", eps_values=eps_values, steps=1),
                     progress=quiet)


def test_a_good_request_still_runs():
    """The refusals above are not a handler that refuses everything."""
    estimate = H.estimate_cost(CostRequest(model="mnist-s4-st", **attack_args()))
    assert "Cost before running" in estimate
