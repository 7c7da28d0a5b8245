"""Evaluation reports: intervals, labels, worst case, resume, curves and transfer."""
import json

import pytest
import torch

from ssm_lab.evaluate import eps_curve, evaluate, predict, transfer_matrix, wilson_interval
from ssm_models import create_model


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0
    assert wilson_interval(50, 50)[1] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_model("dss", d_model=16, d_state=8, n_layers=1, image_size=8, tokenizer="patch", patch_size=2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point starts correct, so attacks have something to break
    return model, x, y


def test_report_fields_and_worst_case(tiny):
    model, x, y = tiny
    rep = evaluate(model, x, y, [{"name": "fgsm"}, {"name": "pgd", "steps": 5}], eps=0.1, batch_size=5)
    assert rep["n"] == 12 and rep["clean"]["accuracy"] == 1.0
    assert rep["threat_model"]["eps_label"].startswith("0.1")
    accs = [a["accuracy"] for a in rep["attacks"]]
    assert rep["worst_case"]["accuracy"] <= min(accs)
    assert all(len(a["ci95"]) == 2 for a in rep["attacks"])
    assert rep["versions"]["torch"] == torch.__version__
    assert [c["check"] for c in rep["gradient_checks"]] == ["float32 vs float64"]
    assert rep["gradient_checks"][0]["agree"] and rep["flags"] == []
    info = rep["model_info"]
    assert info["clean_acc"] == "100.00" and info["threat_model"] == "Linf" and info["n_examples"] == 12
    assert float(info["robust_acc"]) == pytest.approx(100 * rep["worst_case"]["accuracy"], abs=0.01)
    json.dumps(rep)  # the report is plain JSON


def test_resume_gives_the_same_numbers(tiny, tmp_path):
    model, x, y = tiny
    attacks = [{"name": "pgd", "steps": 3}]
    fresh = evaluate(model, x, y, attacks, eps=0.1, batch_size=4, seed=3)

    class StopAfterFirstBatch:
        calls = 0

        def is_set(self):
            self.calls += 1
            return self.calls > 1

    state = tmp_path / "state.json"
    partial = evaluate(model, x, y, attacks, eps=0.1, batch_size=4, seed=3, state_path=state,
                       cancel=StopAfterFirstBatch())
    assert not partial["complete"]
    resumed = evaluate(model, x, y, attacks, eps=0.1, batch_size=4, seed=3, state_path=state)
    assert resumed["complete"]
    assert resumed["attacks"][0]["correct"] == fresh["attacks"][0]["correct"]
    with pytest.raises(ValueError, match="different evaluation"):
        evaluate(model, x, y, attacks, eps=0.2, batch_size=4, seed=3, state_path=state)


def test_eps_curve_is_monotone_and_transfer_shape(tiny):
    model, x, y = tiny
    curves = eps_curve({"a": model}, x, y, [0.0, 0.05, 0.2], {"name": "pgd", "steps": 5})
    accs = [r["accuracy"] for r in curves["curves"]["a"]]
    assert accs[0] == 1.0 and accs[0] >= accs[1] >= accs[2]
    other = create_model("s4", d_model=8, d_state=4, n_layers=1, image_size=8, tokenizer="patch", patch_size=2)
    t = transfer_matrix({"a": model, "b": other}, x, y, {"name": "fgsm"}, eps=0.1)
    assert len(t["matrix"]) == 2 and len(t["matrix"][0]) == 2


def test_evaluate_on_a_dataset_sample(tiny):
    from ssm_lab.data import load_dataset
    from ssm_lab.evaluate import evaluate_dataset

    model = create_model("s4", d_model=8, d_state=4, n_layers=1, image_size=28, tokenizer="patch", patch_size=7)
    data = load_dataset("mnist", "test")
    rep = evaluate_dataset(model, data, [{"name": "fgsm"}], n=30, eps=0.1, seed=1)
    assert rep["n"] == 30 and rep["data"]["dataset"] == "mnist" and rep["data"]["split"] == "test"
    again = evaluate_dataset(model, data, [{"name": "fgsm"}], n=30, eps=0.1, seed=1)
    assert again["attacks"][0]["correct"] == rep["attacks"][0]["correct"]


def test_mamba_reports_get_the_scan_check():
    model = create_model("mamba", d_model=8, d_state=4, n_layers=1, image_size=8, tokenizer="patch", patch_size=2)
    x = torch.rand(4, 1, 8, 8)
    rep = evaluate(model, x, torch.zeros(4, dtype=torch.long), [{"name": "fgsm"}], eps=0.05, checks=2)
    assert [c["check"] for c in rep["gradient_checks"]] == ["float32 vs float64", "parallel scan vs sequential"]
    assert all(c["agree"] for c in rep["gradient_checks"])


def test_images_of_the_wrong_shape_are_refused_before_any_pass(tiny):
    from ssm_lab.attacks import AttackParamError

    model = tiny[0]
    x, y = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)  # CIFAR-10 images for a 1x8x8 model
    with pytest.raises(AttackParamError, match=r"expects images of shape \(1, 8, 8\), got \(3, 32, 32\)"):
        evaluate(model, x, y, [{"name": "fgsm"}], eps=0.1)


def test_predict_builds_no_autograd_graph_and_reuses_the_cached_kernel():
    torch.manual_seed(0)
    model = create_model("s4", d_model=8, d_state=4, n_layers=1, image_size=8, tokenizer="patch", patch_size=2)
    outputs = []
    model.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    predict(model, torch.rand(4, 1, 8, 8), batch_size=2)
    kernels = [m for m in model.modules() if hasattr(m, "_kernel_cache")]
    assert [o.requires_grad for o in outputs] == [False, False]
    assert kernels, "the S4 block has a cached kernel module"
    assert all(k._kernel_cache is not None for k in kernels), "the second batch could reuse the first's kernel"
