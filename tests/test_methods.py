"""Each training method runs two tiny steps on a few images and lowers the loss it optimises."""
import pytest
import torch
import torch.nn.functional as F

from ssm_lab.methods import METHODS, MethodStep, ThreatModel, pgd_linf, trades_adversary
from ssm_models import create_model


def _tiny(arch="s4"):
    torch.manual_seed(0)
    return create_model(arch, d_model=16, d_state=8, n_layers=1, image_size=8, tokenizer="patch", patch_size=2)


def _objective(method, model, x, y, tm):
    """The quantity each method minimises, measured on fixed inputs so two evaluations are comparable."""
    gen = torch.Generator().manual_seed(1)
    if method == "st":
        return F.cross_entropy(model(x), y).item()
    if method == "trades":
        with model.frozen():
            x_adv = trades_adversary(model, x, tm, gen)
        with torch.no_grad():
            logits, logits_adv = model(x), model(x_adv)
            kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits, 1), reduction="batchmean")
            return (F.cross_entropy(logits, y) + tm.beta * kl).item()
    x_adv = pgd_linf(model, x, y, tm, gen)
    with torch.no_grad():
        return F.cross_entropy(model(x_adv), y).item()


@pytest.mark.parametrize("method", METHODS)
def test_two_steps_lower_the_objective(method):
    model = _tiny()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 8, 8, generator=g)
    y = torch.arange(8) % 10
    tm = ThreatModel(eps=0.1, step_size=0.03, steps=3, beta=1.0, replays=2, yopo_outer=2, yopo_inner=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    step = MethodStep(method, model, opt, tm, seed=0)
    before = _objective(method, model, x, y, tm)
    for _ in range(2):
        step(x, y)
    after = _objective(method, model, x, y, tm)
    assert after < before, (method, before, after)


def test_pgd_stays_in_ball_and_box():
    model = _tiny()
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    tm = ThreatModel(eps=0.2, step_size=0.1, steps=5)
    adv = pgd_linf(model, x, y, tm, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.2 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert all(p.requires_grad for p in model.parameters())  # frozen() restored the flags


def test_unknown_method_is_refused():
    model = _tiny()
    with pytest.raises(ValueError, match="unknown training method"):
        MethodStep("magic", model, torch.optim.SGD(model.parameters(), lr=0.1), ThreatModel(0.1, 0.01), seed=0)
