"""AutoAttack: equal to one original pyautoattack run, no weaker than PGD-10, flags, cancel and resume, costs."""
from __future__ import annotations

import threading

import pytest
import torch
from attack_helpers import images, labels_of, make_mlp, within
from torch import nn

from ssm_lab.attacks import AttackParamError, make_attack
from ssm_lab.attacks._runtime import attack_mode


@pytest.fixture(scope="module")
def mlp():
    return make_mlp()


def test_autoattack_equals_one_original_run_of_pyautoattack(mlp):
    from pyautoattack import AutoAttack as Original

    x = images(6, seed=8)
    y = labels_of(mlp, x)
    ours = make_attack("autoattack", mlp, eps=0.03, version="custom", sub_attacks=["apgd-ce", "apgd-dlr"],
                       seed=5, batch_size=4).run(x, y)
    with attack_mode(mlp), torch.random.fork_rng(devices=[]):
        original = Original(mlp, attacks=["apgd-ce", "apgd-dlr"], eps=0.03, norm="Linf", seed=5, version="custom")
        x_adv, _ = original.run_standard_evaluation(x, y, batch_size=4)
    assert torch.equal(ours.adv, x_adv)


def test_autoattack_is_at_least_as_strong_as_pgd10_and_surfaces_flags(mlp):
    x = images(4, seed=9)
    y = labels_of(mlp, x)
    pgd = make_attack("pgd", mlp, eps=0.02, steps=10).run(x, y)
    aa = make_attack("autoattack", mlp, eps=0.02, version="standard").run(x, y)
    assert 0 < pgd.robust_accuracy
    assert aa.robust_accuracy <= pgd.robust_accuracy
    assert aa.details["sub_attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert within(aa.adv, x, 0.02, "Linf")
    assert aa.flags == []  # a plain deterministic logit model: no flags
    softmax = nn.Sequential(mlp, nn.Softmax(dim=1))
    flagged = make_attack("autoattack", softmax, eps=0.02, version="custom", sub_attacks=["apgd-ce"]).run(x, y)
    assert any("probability distribution" in f for f in flagged.flags)


class Noisy(nn.Module):
    """Randomised logits: AutoAttack's randomness check must say so."""

    def __init__(self):
        super().__init__()
        self.inner = make_mlp()

    def forward(self, x):
        return self.inner(x) + 0.1 * torch.randn(x.shape[0], 10)


def test_autoattack_flags_randomness_and_rng_is_isolated():
    x = images(3)
    y = torch.zeros(3, dtype=torch.long)
    state = torch.get_rng_state()
    result = make_attack("autoattack", Noisy(), eps=0.01, version="custom", sub_attacks=["apgd-ce"]).run(x, y)
    assert any("randomized defense" in f for f in result.flags)
    assert torch.equal(torch.get_rng_state(), state)


def test_autoattack_cancel_between_sub_attacks_keeps_results_and_resumes(mlp, tmp_path):
    x = images(8, seed=7)
    y = labels_of(mlp, x)
    params = dict(eps=0.03, version="custom", sub_attacks=["apgd-ce", "apgd-dlr"])
    state = tmp_path / "aa.safetensors"
    event = threading.Event()

    def progress(done, total, message):
        if "apgd-dlr" in message:
            event.set()

    first = make_attack("autoattack", mlp, state_path=str(state), **params).run(x, y, progress=progress,
                                                                                 cancel=event)
    assert first.cancelled
    assert first.details["finished_sub_attacks"] == ["apgd-ce"]
    assert state.exists()
    assert first.success.any()
    assert not first.success.all()
    assert within(first.adv, x, 0.03, "Linf")
    assert torch.equal(first.completed, first.success)  # broken points are final; robust ones await apgd-dlr
    resumed = make_attack("autoattack", mlp, state_path=str(state), **params).run(x, y)
    straight = make_attack("autoattack", mlp, **params).run(x, y)
    assert resumed.details["resumed_after"] == ["apgd-ce"]
    assert torch.equal(resumed.adv, straight.adv)
    assert bool((resumed.success | ~first.success).all())
    assert not resumed.cancelled
    with pytest.raises(AttackParamError, match="different run"):
        make_attack("autoattack", mlp, state_path=str(state), **{**params, "eps": 0.05}).run(x, y)


def test_autoattack_versions_state_their_cost_and_few_classes_cap_the_targets(mlp):
    costs = {v: make_attack("autoattack", mlp, version=v, **({"sub_attacks": ["square"]} if v == "custom" else {}))
             .cost(2) for v in ("standard", "plus", "rand", "custom")}
    assert "EOT 20" in costs["rand"]["description"]
    assert costs["custom"]["backward"] == 0
    assert costs["standard"]["backward"] == 2 * (101 + 9 * 101 + 9 * 100)  # APGD-CE, APGD-T, FAB-T
    assert costs["rand"]["backward"] == 2 * 2 * 101 * 20
    assert costs["plus"]["backward"] > costs["standard"]["backward"]
    four = make_mlp(classes=4)
    x = images(3)
    result = make_attack("autoattack", four, eps=0.02, version="custom", sub_attacks=["apgd-t"]).run(
        x, labels_of(four, x))
    assert any("reduced from 9 to 3" in f for f in result.flags)
    assert make_attack("apgd-t", four, eps=0.02, steps=2).run(x, labels_of(four, x)).flags == [
        "n_targets=9 reduced to 3: the model has only 4 classes"]
