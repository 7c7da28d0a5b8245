"""Mamba's recomputing backward (RecomputedSaves) gives the plain path's values and gradients and keeps less."""
import weakref

import pytest
import torch
from model_helpers import rel_err, seeded_model

from ssm_models import record
from ssm_models.lean_ops import causal_conv
from ssm_models.mamba import MambaBlock
from ssm_models.recompute import RecomputedSaves

SMALL = dict(d_model=8, d_state=4, n_layers=2, image_size=8, expand=2, dt_rank=2)


def model_with(recompute: bool, scan: str = "parallel", train: bool = True) -> torch.nn.Module:
    model = seeded_model("mamba", SMALL, torch.float64)
    for layer in model.layers:
        layer.mixer.recompute_backward = recompute
        layer.mixer.recompute_min_bytes = 0  # these shapes are tiny: recompute whatever the size
        layer.mixer.ssm.scan = scan
    for p in model.parameters():
        p.requires_grad_(train)
    return model


def logits_and_gradients(model, x: torch.Tensor):
    x = x.detach().requires_grad_(True)
    logits = model(x)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(logits.logsumexp(-1).sum(), [x, *params])
    return logits.detach(), grads


@pytest.mark.parametrize("train", [True, False])
def test_recomputing_backward_gives_the_plain_paths_logits_and_gradients(train):
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    model = model_with(True, train=train)
    lean_logits, lean = logits_and_gradients(model, x)
    plain_logits, plain = logits_and_gradients(model_with(False, train=train), x)
    assert torch.equal(lean_logits, plain_logits)
    wanted = 1 + len(list(model.parameters())) if train else 1  # the input, then every parameter when training
    assert len(lean) == len(plain) == wanted, (len(lean), len(plain), wanted)
    for i, (a, b) in enumerate(zip(lean, plain)):
        assert torch.equal(a, b), (i, rel_err(a, b))


def test_recomputing_backward_matches_the_sequential_reference_scan():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    _, lean = logits_and_gradients(model_with(True), x)
    _, reference = logits_and_gradients(model_with(False, scan="sequential"), x)
    for i, (a, b) in enumerate(zip(lean, reference)):
        assert rel_err(a, b) < 1e-10, (i, rel_err(a, b))


def test_recomputing_block_passes_gradcheck():
    torch.manual_seed(0)
    block = MambaBlock(4, d_state=3, expand=2, dt_rank=2).double()
    block.recompute_min_bytes = 0
    u = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (u,))


def test_the_graph_does_not_keep_the_conv_branch_alive():
    model = model_with(True)
    mixer = model.layers[0].mixer
    outputs = {}
    for name in ("in_proj", "conv_act", "x_proj", "dt_proj"):
        getattr(mixer, name).register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, weakref.ref(out)))
    logits = model(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    alive = [name for name, ref in outputs.items() if ref() is not None]
    assert alive == [], alive
    assert logits.grad_fn is not None


def test_the_plain_path_keeps_the_conv_branch_alive():
    model = model_with(False)
    kept = []
    model.layers[0].mixer.conv_act.register_forward_hook(lambda _m, _i, out: kept.append(weakref.ref(out)))
    logits = model(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    assert kept[0]() is not None
    assert logits.grad_fn is not None


def test_probes_fire_once_per_forward_and_record_the_plain_paths_values_and_feature_gradients():
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    results = []
    for recompute in (True, False):
        model = model_with(recompute)
        calls = []
        for module in model.modules():
            module.register_forward_hook(lambda m, _i, _o: calls.append(m))
        with record(model) as rec:
            model(x)
            # a loss on internal features, as feature-level attacks use (detach=False keeps them in the graph)
            loss = sum(rec[name].square().sum() for name in ("layers.1.conv", "layers.1.ssm", "layers.1.gate"))
            used = [*model.layers[0].parameters(), *model.layers[1].mixer.conv1d.parameters()]  # upstream of the loss
            grads = torch.autograd.grad(loss, used)
        results.append(({name: rec[name].detach() for name in rec}, grads, len(calls)))
    (lean_rec, lean_grads, lean_calls), (plain_rec, plain_grads, plain_calls) = results
    assert lean_calls == plain_calls, (lean_calls, plain_calls)
    assert list(lean_rec) == list(plain_rec)
    for name in lean_rec:
        assert torch.equal(lean_rec[name], plain_rec[name]), name
    for i, (a, b) in enumerate(zip(lean_grads, plain_grads)):
        assert torch.equal(a, b), (i, rel_err(a, b))


def test_retained_graph_gives_the_same_gradients_twice():
    model = model_with(True, train=False)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    loss = model(x).logsumexp(-1).sum()
    first = torch.autograd.grad(loss, x, retain_graph=True)[0]
    second = torch.autograd.grad(loss, x)[0]
    assert torch.equal(first, second)


def test_a_parameter_changed_in_place_before_the_backward_is_refused():
    model = model_with(True)
    loss = model(torch.rand(2, 1, 8, 8, dtype=torch.float64)).sum()
    with torch.no_grad():
        model.layers[0].mixer.x_proj.weight.mul_(2)
    with pytest.raises(RuntimeError, match="modified in place after the forward"):
        loss.backward()


def test_recomputed_saves_release_the_registered_tensor_and_rebuild_it():
    a = torch.randn(5, dtype=torch.float64, requires_grad=True)
    calls = []

    def recompute(_earlier):
        calls.append(1)
        return {"e": a.detach().exp()}

    saves = RecomputedSaves([recompute], guard=[a])
    with saves.saving():
        e = saves.keep("e", a.exp())  # exp saves its output
        out = e.sin()  # sin saves its input: the same tensor
    ref = weakref.ref(e)
    del e
    assert ref() is None
    (grad,) = torch.autograd.grad(out.sum(), a)
    assert torch.allclose(grad, a.exp() * a.exp().cos(), rtol=1e-15, atol=0)
    assert calls == [1]


@pytest.mark.parametrize("length", [1, 2, 3, 7])
def test_lean_causal_conv_passes_gradcheck_at_lengths_near_the_kernel_width(length):
    torch.manual_seed(0)
    x = torch.randn(2, length, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(causal_conv, (x, weight, bias))


@pytest.mark.parametrize("batch, recomputes", [(1, False), (4, True)])
def test_recomputation_starts_where_the_kept_intermediates_reach_the_threshold(batch, recomputes):
    # paper scale (E = 256, L = 1,024): one image keeps 5 MiB a layer, under the 16 MiB default; four keep 20 MiB
    torch.manual_seed(0)
    block = MambaBlock(128, d_state=4, expand=2, dt_rank=8)
    outputs = []
    block.conv_act.register_forward_hook(lambda _m, _i, out: outputs.append(weakref.ref(out)))
    y = block(torch.randn(batch, 1024, 128, requires_grad=True))
    assert y.grad_fn is not None
    assert (outputs[0]() is None) == recomputes, f"batch {batch}: the conv branch kept {outputs[0]() is not None}"
