"""Attacks: eps-ball and box, seeds, monotone robustness, budgets, cancel, progress, costs, SSM checks."""
from __future__ import annotations

import copy
import math
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from attack_helpers import images, labels_of, make_mlp, within
from torch import nn

from ssm_lab.attacks import ATTACKS, AttackParamError, list_attacks, make_attack
from ssm_lab.attacks._runtime import attack_mode
from ssm_lab.attacks.checks import gradient_agreement, mode_check, precision_check, scan_vs_sequential_check
from ssm_models import create_model

# Cheap settings per attack; every attack appears at least once, each supported norm once.
CHEAP = {
    "fgsm": {},
    "pgd": {"steps": 4},
    "apgd-ce": {"steps": 4},
    "apgd-t": {"steps": 3, "n_targets": 2},
    "fab-t": {"steps": 3, "n_targets": 2},
    "square": {"queries": 40},
    "cw-l2": {"steps": 8},
    "deepfool": {"steps": 4},
    "autoattack": {"version": "custom", "sub_attacks": ["apgd-ce"]},
}
CASES = [(name, norm) for name, cls in ATTACKS.items() for norm in cls.norms]
EPS = {"Linf": 0.05, "L2": 0.4}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared cores: OpenMP threads fighting other jobs make tiny models 10-50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_s4() -> nn.Module:
    torch.manual_seed(0)
    return create_model("s4", d_model=16, d_state=8, n_layers=1, image_size=8)


@pytest.fixture(scope="module")
def mlp():
    return make_mlp()


@pytest.fixture(scope="module")
def s4():
    return tiny_s4()


# ----- every attack ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,norm", CASES)
def test_every_attack_is_valid_counted_and_leaves_no_trace_on_the_caller(mlp, name, norm):
    x = images(5)
    y = labels_of(mlp, x)
    atk = make_attack(name, mlp, eps=EPS[norm], norm=norm, batch_size=3, **CHEAP[name])
    calls = []
    rng = torch.get_rng_state()
    result = atk.run(x, y, progress=lambda done, total, msg: calls.append((done, total, msg)), trace=True)
    assert torch.equal(torch.get_rng_state(), rng), "the caller's global RNG stream moved"
    assert mlp.training, "train mode / grads not restored"
    assert all(p.requires_grad for p in mlp.parameters()), "train mode / grads not restored"
    assert result.adv.dtype == torch.float32
    assert result.adv.shape == x.shape
    assert within(result.adv, x, atk.eps, norm)
    assert result.success.dtype == torch.bool
    assert torch.equal(result.success, result.pred != y)
    assert torch.equal(result.pred, labels_of(mlp, result.adv))
    assert result.completed.all()
    assert not result.cancelled
    cost = atk.cost(len(x), trace=True)
    assert 0 < result.forward_calls <= cost["forward"]
    assert result.backward_calls <= cost["backward"]
    assert (cost["backward"] > 0) == (name != "square")
    assert result.elapsed > 0
    assert cost["description"]
    assert calls
    assert all(0 <= d <= t for d, t, _ in calls)
    assert calls[-1][0] == calls[-1][1]
    trace = result.trace
    assert trace["loss"].shape[1] == len(x)
    assert trace["final"][-1]
    assert len(trace["step"]) >= 2
    assert trace["pred"][-1].tolist() == result.pred.tolist()


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "apgd-t", "fab-t", "square", "autoattack"])
def test_seeded_runs_repeat_bitwise(mlp, name):
    x = images(4, seed=2)
    y = labels_of(mlp, x)
    first = make_attack(name, mlp, eps=0.05, seed=7, **CHEAP[name]).run(x, y)
    torch.manual_seed(123)  # a different global state must not matter
    again = make_attack(name, mlp, eps=0.05, seed=7, **CHEAP[name]).run(x, y)
    assert torch.equal(first.adv, again.adv)
    assert first.seed == again.seed == 7


def test_pgd_seed_changes_random_start_and_unseeded_run_reports_its_seed(mlp):
    x = images(4, seed=2)
    y = labels_of(mlp, x)
    a = make_attack("pgd", mlp, eps=0.05, steps=0, seed=1).run(x, y).adv
    b = make_attack("pgd", mlp, eps=0.05, steps=0, seed=2).run(x, y).adv
    assert not torch.equal(a, b)
    free = make_attack("pgd", mlp, eps=0.05, steps=2, seed=None).run(x, y)
    replay = make_attack("pgd", mlp, eps=0.05, steps=2, seed=free.seed).run(x, y)
    assert torch.equal(free.adv, replay.adv)


# ----- robust accuracy behaves ------------------------------------------------------------------------
def robust_curve(model, name, grid, key="eps", **params):
    x = images(48, seed=3)
    y = labels_of(model, x)
    return [make_attack(name, model, **{key: v}, **params).run(x, y).robust_accuracy for v in grid]


def non_increasing(values, slack=0.0) -> bool:
    return all(b <= a + slack for a, b in zip(values, values[1:]))


def test_robust_accuracy_never_rises_with_eps_or_steps_for_deterministic_attacks(mlp):
    fgsm = robust_curve(mlp, "fgsm", [0.0, 0.01, 0.02, 0.04, 0.08, 0.16])
    assert fgsm[0] == 1.0
    assert fgsm[-1] < 0.5
    assert non_increasing(fgsm)
    # a longer PGD run extends the shorter one (same seed and step size) and keeps first successes
    steps = robust_curve(mlp, "pgd", [0, 1, 2, 4, 8], key="steps", eps=0.02, step_size=0.005)
    assert steps[-1] < steps[0]
    assert non_increasing(steps)
    deepfool = robust_curve(mlp, "deepfool", [0.0, 0.1, 0.2, 0.4], steps=10)
    assert deepfool[-1] < 1.0
    assert non_increasing(deepfool)


def test_robust_accuracy_falls_with_eps_for_randomised_attacks_up_to_noise(mlp):
    one_image = 1 / 48 + 1e-9
    pgd = robust_curve(mlp, "pgd", [0.0, 0.01, 0.02, 0.04, 0.08], steps=5)
    assert pgd[-1] < 0.5
    assert non_increasing(pgd, slack=one_image)
    apgd = robust_curve(mlp, "apgd-ce", [0.0, 0.01, 0.02, 0.04], steps=5)
    assert apgd[-1] < 0.8
    assert non_increasing(apgd, slack=one_image)


def test_more_restarts_never_hurt(mlp):
    x = images(24, seed=4)
    y = labels_of(mlp, x)
    one = make_attack("pgd", mlp, eps=0.02, steps=3, restarts=1).run(x, y)
    three = make_attack("pgd", mlp, eps=0.02, steps=3, restarts=3).run(x, y)
    assert bool((three.success | ~one.success).all())  # restart 0 is the single run: its successes stay


def test_pgd_gradient_is_taken_at_the_returned_random_start(mlp):
    """steps=0 returns the random start x0; steps=1 must be exactly one step from that x0 (not from x0 + delta0)."""
    x = images(6, seed=5)
    y = labels_of(mlp, x)
    eps, alpha = 0.05, 0.02
    x0 = make_attack("pgd", mlp, eps=eps, steps=0, seed=3).run(x, y).adv
    assert within(x0, x, eps, "Linf")
    assert not torch.equal(x0, x)
    one = make_attack("pgd", mlp, eps=eps, steps=1, step_size=alpha, seed=3).run(x, y, trace=True)
    with attack_mode(mlp):
        x_req = x0.clone().requires_grad_(True)
        logits = mlp(x_req)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x_req)
    stepped = torch.min(torch.max(x0 + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    already = (logits.argmax(1) != y).view(-1, 1, 1, 1)  # a success at x0 is kept as it is
    assert torch.allclose(one.adv, torch.where(already, x0, stepped), atol=1e-6, rtol=0)
    first_row = one.trace["loss"][0]
    assert torch.allclose(torch.from_numpy(first_row), F.cross_entropy(logits, y, reduction="none").detach(),
                          atol=1e-5)


def test_targeted_pgd_reaches_the_target(mlp):
    x = images(8, seed=6)
    y = labels_of(mlp, x)
    target = int((y[0] + 1) % 10)
    # eps=1 spans the whole box, so every class this untrained model has is reachable
    result = make_attack("pgd", mlp, eps=1.0, steps=20, targeted=True, target=target).run(x, y)
    assert torch.equal(result.success, result.pred == target)
    assert result.success.float().mean() >= 0.75
    likely = make_attack("pgd", mlp, eps=0.3, steps=20, targeted=True).run(x, y)  # most likely wrong class
    assert bool((likely.target != y).all())
    assert likely.success.float().mean() >= 0.75


def test_eps_zero_returns_the_clean_images_without_attacking(mlp):
    x = images(4)
    y = labels_of(mlp, x)
    result = make_attack("pgd", mlp, eps=0.0).run(x, y)
    assert torch.equal(result.adv, x)
    assert result.backward_calls == 0
    assert result.forward_calls == 1 + len(x)  # probe + evaluation


# ----- budgets ------------------------------------------------------------------------------------------
def test_pgd_cost_is_exact_and_scales_with_images(mlp):
    x = images(7)
    y = labels_of(mlp, x)
    unbreakable = make_attack("pgd", mlp, eps=1e-6, steps=10, batch_size=4)  # no image is fooled: the full bound
    result = unbreakable.run(x, y)
    cost = unbreakable.cost(7)
    assert (result.forward_calls, result.backward_calls) == (cost["forward"], cost["backward"]) == (1 + 7 * 11, 70)
    assert result.model_calls == 1 + 2 * 10 + 2  # batches of 4 + 3: one forward+backward per step, no extras
    atk = make_attack("pgd", mlp, eps=0.3, steps=10, batch_size=4)  # images leave at their first success
    result = atk.run(x, y, trace=True)
    steps_taken = int(np.isfinite(result.trace["loss"][~result.trace["final"]]).sum())
    assert 7 <= steps_taken < 70
    assert result.success.all()
    assert (result.forward_calls, result.backward_calls) == (1 + steps_taken + 7, steps_taken)
    assert atk.cost(70)["backward"] == 10 * atk.cost(7)["backward"]
    aa = make_attack("autoattack", mlp).cost(10)
    assert aa["forward"] > 10 * (5000 + 9 * 100)
    assert aa["backward"] > 10 * (100 + 9 * 100 + 9 * 100)


BAD_PARAMS = [
    ("pgd", {"eps": float("nan")}, "NaN"),
    ("pgd", {"eps": float("inf")}, "infinite"),
    ("pgd", {"eps": -0.1}, "must not be negative"),
    ("pgd", {"eps": 1.5}, "whole [0, 1] box"),
    ("pgd", {"eps": "0.1"}, "must be a number"),
    ("pgd", {"steps": 5000}, "MAX_STEPS"),
    ("pgd", {"steps": 2.5}, "whole number"),
    ("pgd", {"steps": True}, "must be a number"),
    ("pgd", {"restarts": 50}, "MAX_RESTARTS"),
    ("pgd", {"restarts": 0}, "must be at least 1"),
    ("pgd", {"step_size": 0.0}, "must be positive"),
    ("pgd", {"batch_size": 0}, "must be positive"),
    ("pgd", {"batch_size": 10**6}, "MAX_BATCH"),
    ("pgd", {"seed": -1}, "must not be negative"),
    ("pgd", {"norm": "L1"}, "supports norm"),
    ("pgd", {"random_start": "yes"}, "random_start"),
    ("pgd", {"early_stop": 0}, "early_stop"),
    ("pgd", {"target": 3}, "only used with targeted=True"),
    ("pgd", {"targeted": 1}, "True or False"),
    ("pgd", {"queries": 10}, "does not take queries"),
    ("square", {"queries": 10**6}, "MAX_QUERIES"),
    ("square", {"p_init": 0}, "must be positive"),
    ("apgd-t", {"n_targets": 100}, "MAX_TARGETS"),
    ("apgd-ce", {"targeted": True}, "no targeted mode"),
    ("cw-l2", {"norm": "Linf"}, "supports norm L2"),
    ("cw-l2", {"c": -1.0}, "must be positive"),
    ("deepfool", {"overshoot": float("nan")}, "NaN"),
    ("autoattack", {"version": "fast"}, "version must be one of"),
    ("autoattack", {"version": "custom"}, "needs sub_attacks"),
    ("autoattack", {"version": "custom", "sub_attacks": ["apgd-ce", "pgd"]}, "unknown sub-attack"),
    ("autoattack", {"sub_attacks": ["square"]}, "only used with version='custom'"),
    ("nope", {}, "unknown attack"),
]


@pytest.mark.parametrize("name,params,message", BAD_PARAMS)
def test_bad_parameters_fail_with_specific_messages(mlp, name, params, message):
    with pytest.raises(AttackParamError, match=None) as info:
        make_attack(name, mlp, **params)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = make_mlp()

    def forward(self, x):
        return self.inner(x), x


BAD_INPUTS = [
    (lambda x, y: (x * 2, y), "must lie in [0, 1]"),
    (lambda x, y: ((x * 255).to(torch.uint8), y), "float tensor"),
    (lambda x, y: (x.masked_fill(x > 0.9, float("nan")), y), "NaN"),
    (lambda x, y: (x, y[:-1]), "to match x"),
    (lambda x, y: (x, y.float()), "integer class indices"),
    (lambda x, y: (x, y + 10), "not a class of this model"),
    (lambda x, y: (x, y - 20), "must not be negative"),
    (lambda x, y: (x[:0], y[:0]), "N >= 1"),
    (lambda x, y: (torch.zeros(10_001, 1, 2, 2), torch.zeros(10_001, dtype=torch.long)), "MAX_IMAGES"),
    (lambda x, y: (torch.zeros(1, 5, 128, 128), y[:1]), "MAX_IMAGE_NUMEL"),
]


@pytest.mark.parametrize("corrupt,message", BAD_INPUTS)
def test_bad_inputs_fail_with_specific_messages(mlp, corrupt, message):
    x = images(3)
    y = labels_of(mlp, x)
    with pytest.raises(AttackParamError) as info:
        make_attack("pgd", mlp, eps=0.03).run(*corrupt(x, y))
    assert message in str(info.value)


def test_model_contract_and_l2_radius_are_checked(mlp):
    x = images(2)
    with pytest.raises(AttackParamError, match="one \\(N, classes\\) logits tensor"):
        make_attack("fgsm", TupleModel()).run(x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(AttackParamError, match="sqrt\\(64\\)"):
        make_attack("pgd", mlp, norm="L2", eps=9.0).run(x, labels_of(mlp, x))
    with pytest.raises(AttackParamError, match="cancel must have an is_set"):
        make_attack("fgsm", mlp).run(x, labels_of(mlp, x), cancel=True)


# ----- cancel and progress --------------------------------------------------------------------------------
def cancel_after(n_calls: int):
    event, seen = threading.Event(), []

    def progress(done, total, message):
        seen.append(message)
        if len(seen) >= n_calls:
            event.set()

    return event, progress, seen


def test_cancel_stops_pgd_early_with_a_valid_batch(mlp):
    x = images(10)
    y = labels_of(mlp, x)
    event, progress, seen = cancel_after(3)
    atk = make_attack("pgd", mlp, eps=0.05, steps=50, batch_size=4)
    result = atk.run(x, y, progress=progress, cancel=event)
    assert result.cancelled
    assert result.backward_calls == 3 * 4  # three steps of the first batch
    assert within(result.adv, x, 0.05, "Linf")
    assert not result.completed.any()
    assert not torch.equal(result.adv[:4], x[:4])
    assert torch.equal(result.adv[4:], x[4:])  # best so far kept


def test_cancel_reaches_inside_a_wrapped_library_attack(mlp):
    x = images(4)
    y = labels_of(mlp, x)
    event, progress, _ = cancel_after(20)
    result = make_attack("square", mlp, eps=0.01, queries=5000).run(x, y, progress=progress, cancel=event)
    assert result.cancelled
    assert result.forward_calls < 200
    assert within(result.adv, x, 0.01, "Linf")


def test_cancel_set_before_running_returns_the_clean_batch(mlp):
    x = images(3)
    y = labels_of(mlp, x)
    event = threading.Event()
    event.set()
    result = make_attack("apgd-ce", mlp, eps=0.05, steps=5).run(x, y, cancel=event)
    assert result.cancelled
    assert torch.equal(result.adv, x)
    assert result.backward_calls == 0


def test_progress_is_called_every_pgd_iteration(mlp):
    x = images(5)
    y = labels_of(mlp, x)
    seen = []
    make_attack("pgd", mlp, eps=1e-6, steps=6, batch_size=3).run(x, y, progress=lambda d, t, m: seen.append((d, t)))
    assert [d for d, _ in seen[:-1]] == list(range(1, 13))
    assert all(t == 12 for _, t in seen)
    seen.clear()  # when every image of a batch is fooled early, progress skips that batch's remaining steps
    result = make_attack("pgd", mlp, eps=0.3, steps=6, batch_size=3).run(
        x, y, progress=lambda d, t, m: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert result.backward_calls < 6 * 5
    assert done == sorted(done)
    assert 12 in done
    assert done[-1] == 12


def test_list_attacks_describes_every_attack():
    info = list_attacks()
    assert set(info) == {"fgsm", "pgd", "apgd-ce", "apgd-t", "fab-t", "square", "cw-l2", "deepfool", "autoattack"}
    assert info["pgd"]["params"]["steps"] == 10
    assert info["apgd-ce"]["params"]["steps"] == 100
    assert info["cw-l2"]["norms"] == ["L2"]
    assert info["pgd"]["targeted"]
    assert not info["apgd-t"]["targeted"]
    assert info["pgd"]["traces_iterations"]
    assert not info["square"]["traces_iterations"]
    assert all("model" not in meta["params"] for meta in info.values())


# ----- SSM models -----------------------------------------------------------------------------------------
def test_attacks_on_a_tiny_s4_run_frozen_and_restore_it(s4):
    x = images(3)
    y = labels_of(s4, x)
    s4.train()
    for name in ("pgd", "apgd-ce", "square"):
        atk = make_attack(name, s4, eps=0.05, **CHEAP[name])
        result = atk.run(x, y)
        assert within(result.adv, x, 0.05, "Linf")
        assert result.forward_calls <= atk.cost(3)["forward"]
    pgd = make_attack("pgd", s4, eps=0.05, steps=10).run(x, y)  # the config names the classes: no probe pass
    assert (pgd.forward_calls, pgd.backward_calls, pgd.model_calls) == (3 * 11, 3 * 10, 11)
    assert s4.training
    assert all(p.requires_grad for p in s4.parameters())
    with pytest.raises(AttackParamError, match="expects images of shape"):
        make_attack("pgd", s4).run(torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(AttackParamError, match="not a class of this model"):
        make_attack("pgd", s4, targeted=True, target=10)


def test_autoattack_on_a_tiny_s4_is_no_weaker_than_pgd10(s4):
    x = images(3, seed=11)
    y = labels_of(s4, x)
    pgd = make_attack("pgd", s4, eps=0.03, steps=10).run(x, y)
    aa = make_attack("autoattack", s4, eps=0.03, version="custom", sub_attacks=["apgd-ce"]).run(x, y)
    assert aa.robust_accuracy <= pgd.robust_accuracy
    assert within(aa.adv, x, 0.03, "Linf")


def test_float32_gradients_agree_with_float64_on_s4(s4):
    x = images(2)
    report = precision_check(s4, x, labels_of(s4, x))
    assert report["agree"]
    assert report["cosine_min"] > 0.9999
    assert report["flag"] is None
    assert s4.training
    assert next(s4.parameters()).dtype == torch.float32  # the original is untouched


def test_recurrent_mode_gradients_agree_with_convolution_mode(s4):
    x = images(2)
    report = mode_check(s4, x, labels_of(s4, x))
    assert report["agree"]
    assert report["logit_max_abs_diff"] < 1e-3


def test_mamba_parallel_scan_gradients_match_the_sequential_reference():
    torch.manual_seed(0)
    scan = create_model("mamba", d_model=8, d_state=4, n_layers=1, image_size=8)
    sequential = copy.deepcopy(scan)
    for module in sequential.modules():
        if type(module).__name__ == "SelectiveSSM":
            module.scan = "sequential"
    x = images(2)
    report = scan_vs_sequential_check(scan, sequential, x, labels_of(scan, x))
    assert report["agree"]
    assert report["rel_error_max"] < 1e-4
    assert report["check"] == "parallel scan vs sequential"


def test_gradient_agreement_catches_a_different_path(mlp):
    x = images(4)
    y = labels_of(mlp, x)
    other = make_mlp(seed=1)
    report = scan_vs_sequential_check(mlp, other, x, y)
    assert not report["agree"]
    assert "parallel scan vs sequential" in report["flag"]
    same = gradient_agreement(mlp, lambda z: mlp(z.flip(0)).flip(0), x, y)  # same function, other batch order
    assert same["agree"]
    assert math.isclose(same["cosine_min"], 1.0, abs_tol=1e-6)


def test_pgd_without_early_stop_takes_every_step_for_every_image(mlp):
    x = images(6, seed=5)
    y = labels_of(mlp, x)
    stopping = make_attack("pgd", mlp, eps=0.3, steps=5, seed=1).run(x, y)
    full = make_attack("pgd", mlp, eps=0.3, steps=5, seed=1, early_stop=False).run(x, y)
    assert stopping.backward_calls < 6 * 5, "a large eps fools some images before the last step"
    assert full.backward_calls == 6 * 5


def test_the_result_carries_the_logits_its_predictions_came_from():
    model = make_mlp()
    x = images(3)
    result = make_attack("pgd", model, eps=0.1, steps=2, seed=0).run(x, labels_of(model, x))
    with torch.no_grad():
        expected = model(result.adv)  # (3, 10)
    assert torch.equal(result.logits, expected)
    assert torch.equal(result.pred, expected.argmax(dim=1))


@pytest.mark.parametrize("arch", ["s4", "mamba"])
def test_single_image_probabilities_after_the_attack_equal_a_fresh_forward(arch):
    # attack_single reuses the attack's last pass (attack mode: frozen, cached kernel) for p_adv
    from ssm_lab.single import attack_single, probabilities

    torch.manual_seed(0)
    model = create_model(arch, d_model=8, n_layers=1, d_state=4, image_size=8, tokenizer="patch", patch_size=2)
    res = attack_single(model, images(1), None, "pgd", seed=0, eps=0.1, steps=2)
    assert np.array_equal(res["p_adv"], probabilities(model, res["adv"]))
