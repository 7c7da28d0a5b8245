"""Each training method runs two tiny steps on a few images and lowers the loss it optimises."""
import pytest
import torch
import torch.nn.functional as F

from ssm_lab.attacks.pgd import PGD
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
    assert adv.min() >= 0
    assert adv.max() <= 1
    assert all(p.requires_grad for p in model.parameters())  # frozen() restored the flags


def test_unknown_method_is_refused():
    model = _tiny()
    with pytest.raises(ValueError, match="unknown training method"):
        MethodStep("magic", model, torch.optim.SGD(model.parameters(), lr=0.1), ThreatModel(0.1, 0.01), seed=0)


def _logits_from_tokens(model, tokens):
    """The classifier after its first layer, spelled out: embed_norm, the residual layers, pool, head."""
    z = model.embed_norm(tokens)  # (B, L, H)
    for layer in model.layers:
        z = layer(z)  # (B, L, H)
    return model.head(model.pool(z))  # (B, classes)


def _patches(x, size=2):
    return F.unfold(x, kernel_size=size, stride=size).transpose(1, 2)  # (B, L, C p p), row-major patches


def _yopo_by_hand(model, x, y, tm, seed):
    """YOPO-m-n written out for a patch-embedding first layer f0(u) = W patches(u) + b: returns the final input
    and the first layer's gradient sum_j p_j . d f0(x + eta_j^n) / dW, with p_j the gradient of the loss / m
    at f0's output at the outer step's starting point."""
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    x_adv = (x + (2 * u - 1) * tm.eps).clamp(0, 1)
    weight = model.embed.proj.weight.reshape(model.embed.proj.out_channels, -1)  # (H, C p p)
    grad_w = torch.zeros_like(weight)
    for _ in range(tm.yopo_outer):
        tokens = model.tokens(x_adv).detach().requires_grad_(True)  # (B, L, H)
        loss = F.cross_entropy(_logits_from_tokens(model, tokens), y) / tm.yopo_outer
        (p,) = torch.autograd.grad(loss, tokens)  # (B, L, H)
        for _ in range(tm.yopo_inner):
            # d/du sum p . (W patches(u)) = fold(p W): the first-layer objective's input gradient
            g = F.fold((p @ weight).transpose(1, 2), output_size=x.shape[-1], kernel_size=2, stride=2)
            x_adv = torch.min(torch.max(x_adv + tm.step_size * g.sign(), x - tm.eps), x + tm.eps).clamp(0, 1)
        grad_w += torch.einsum("blh,blk->hk", p, _patches(x_adv))
    return x_adv, grad_w


def test_yopo_gives_the_first_layer_the_gradient_of_its_p_weighted_output_at_the_final_perturbation():
    model = _tiny()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    tm = ThreatModel(eps=0.3, step_size=0.1, yopo_outer=2, yopo_inner=2)
    step = MethodStep("yopo", model, torch.optim.SGD(model.parameters(), lr=0.0), tm, seed=3)  # lr 0: grads kept
    expected_input, expected_grad = _yopo_by_hand(model, x, y, tm, seed=3)
    _, _, trained_on = step(x, y)
    got = model.embed.proj.weight.grad.reshape(expected_grad.shape)
    assert torch.allclose(trained_on, expected_input, atol=1e-6), (trained_on - expected_input).abs().max()
    assert torch.allclose(got, expected_grad, atol=1e-6), (got - expected_grad).abs().max()


def test_yopo_gives_the_other_layers_the_full_gradient_at_each_outer_start():
    model = _tiny()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    tm = ThreatModel(eps=0.3, step_size=0.1, yopo_outer=1, yopo_inner=2)
    step = MethodStep("yopo", model, torch.optim.SGD(model.parameters(), lr=0.0), tm, seed=3)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    start = (x + (2 * u - 1) * tm.eps).clamp(0, 1)
    (expected,) = torch.autograd.grad(F.cross_entropy(model(start), y), model.head.weight)
    step(x, y)
    assert torch.allclose(model.head.weight.grad, expected, atol=1e-6)


def _record_inputs(model):
    seen = []
    model.register_forward_pre_hook(lambda _module, inputs: seen.append(inputs[0].detach().clone()))
    return seen


def test_freeat_carries_the_perturbation_into_a_smaller_last_batch():
    model = _tiny()
    g = torch.Generator().manual_seed(0)
    x_full, x_last = torch.rand(6, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    tm = ThreatModel(eps=0.1, step_size=0.1, replays=2)
    step = MethodStep("freeat", model, torch.optim.SGD(model.parameters(), lr=0.0), tm, seed=0)
    step(x_full, torch.arange(6) % 10)
    carried = step.free_delta.clone()
    seen = _record_inputs(model)
    step(x_last, torch.tensor([1, 2]))
    assert carried.abs().max() > 0, "the first batch moved the perturbation"
    assert torch.equal(seen[0], (x_last + carried[:2]).clamp(0, 1)), "the small batch starts from the carried rows"
    assert torch.equal(step.free_delta[2:], carried[2:]), "rows the small batch did not use are kept"


def test_freeat_perturbation_stays_within_the_current_eps():
    model = _tiny()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    step = MethodStep("freeat", model, torch.optim.SGD(model.parameters(), lr=0.0),
                      ThreatModel(eps=0.2, step_size=0.2, replays=3), seed=0)
    step(x, torch.arange(4))
    step.tm = ThreatModel(eps=0.05, step_size=0.05, replays=1)  # as during eps warm-up, but downwards
    seen = _record_inputs(model)
    step(x, torch.arange(4))
    assert (seen[0] - x).abs().max() <= 0.05 + 1e-7
    assert step.free_delta.abs().max() <= 0.05 + 1e-7


def test_freeat_refuses_a_batch_of_another_image_shape():
    model = _tiny()
    step = MethodStep("freeat", model, torch.optim.SGD(model.parameters(), lr=0.0), ThreatModel(0.1, 0.1), seed=0)
    step(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"one image shape: got \(3, 8, 8\) after \(1, 8, 8\)"):
        step(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))


def _madry_pgd_by_hand(model, x, y, tm, seed):
    """Madry et al.'s PGD-k from the uniform start that the seed gives: every step, last iterate."""
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * (2 * tm.eps) - tm.eps
    x_adv = (x + noise).clamp(0, 1)
    for _ in range(tm.steps):
        point = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(point), y), point)
        x_adv = torch.min(torch.max(x_adv + tm.step_size * grad.sign(), x - tm.eps), x + tm.eps).clamp(0, 1)
    return x_adv


def _seed_drawn_from(generator_seed):
    return int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(generator_seed)))


def test_training_pgd_is_madrys_every_step_pgd_from_the_seeded_start():
    model = _tiny()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.arange(6)
    tm = ThreatModel(eps=0.3, step_size=0.05, steps=4)
    got = pgd_linf(model, x, y, tm, torch.Generator().manual_seed(9))
    with model.frozen():
        expected = _madry_pgd_by_hand(model, x, y, tm, _seed_drawn_from(9))
    assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()


def test_best_epoch_pgd_is_the_evaluation_attack():
    model = _tiny()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.arange(6)
    tm = ThreatModel(eps=0.3, step_size=0.05, steps=4)
    got = pgd_linf(model, x, y, tm, torch.Generator().manual_seed(9), early_stop=True)
    reported = PGD(model, eps=0.3, steps=4, step_size=0.05, seed=_seed_drawn_from(9)).run(x, y).adv
    assert torch.equal(got, reported)
