"""Mamba (S6): shapes, gradients, mamba_ssm layout, fast scan == sequential, mambapy oracle, step mode."""
import math

import pytest
import torch
from mambapy.mamba import MambaBlock as ReferenceMambaBlock
from mambapy.mamba import MambaConfig as ReferenceConfig
from model_helpers import assert_gradients_reach_every_parameter, rel_err, scan_inputs, seeded_model

from ssm_models import create_model, probe_names, record
from ssm_models.mamba import MambaBlock
from ssm_models.pscan import selective_scan, selective_scan_sequential

SMALL = dict(d_model=16, d_state=8, n_layers=2, image_size=8)
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


def make(dtype=torch.float32, **overrides) -> torch.nn.Module:
    return seeded_model("mamba", SMALL, dtype, **overrides)


# ----- the scan ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length,block", [(37, None), (37, 5), (40, 8), (1, None), (9, 1), (9, 64)])
def test_fast_scan_matches_sequential_outputs_and_gradients(length, block, dtype):
    inputs = scan_inputs(3, length, 6, 4, dtype)
    grad_y = torch.randn(3, length, 6, dtype=dtype, generator=torch.Generator().manual_seed(2))
    fast = selective_scan(*inputs, block=block)
    reference = selective_scan_sequential(*inputs)
    assert rel_err(fast, reference) < TOLERANCE[dtype]
    fast_grads = torch.autograd.grad(fast, inputs, grad_y)
    reference_grads = torch.autograd.grad(reference, inputs, grad_y)
    for name, a, b in zip(["x", "dt", "A", "B", "C", "D"], fast_grads, reference_grads):
        if length == 1 and name == "A":  # no step ever decays a nonzero state: dL/dA is exactly zero
            assert a.abs().max() == 0
            assert b.abs().max() == 0
            continue
        assert rel_err(a, b) < TOLERANCE[dtype], name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tile,block", [(8, 3), (12, 4), (24, 5), (64, 7)])
def test_tiled_scan_matches_sequential_when_tiles_split_the_batch_and_the_channels(tile, block, dtype):
    # state (E, N) = (6, 4): tile 8 splits the channels (2 per tile), 12 gives 3 channels, 24 one image per
    # tile and 64 two images per tile with a ragged last tile over a batch of 3
    inputs = scan_inputs(3, 23, 6, 4, dtype)
    grad_y = torch.randn(3, 23, 6, dtype=dtype, generator=torch.Generator().manual_seed(3))
    fast = selective_scan(*inputs, block=block, tile=tile)
    reference = selective_scan_sequential(*inputs)
    assert rel_err(fast, reference) < TOLERANCE[dtype]
    fast_grads = torch.autograd.grad(fast, inputs, grad_y)
    reference_grads = torch.autograd.grad(reference, inputs, grad_y)
    for name, a, b in zip(["x", "dt", "A", "B", "C", "D"], fast_grads, reference_grads):
        assert rel_err(a, b) < TOLERANCE[dtype], f"{name}: tile {tile}, block {block}"


@pytest.mark.parametrize("tile,block", [(4, 2), (100, 3)])
def test_tiled_scan_passes_gradcheck(tile, block):
    inputs = [t.detach().requires_grad_() for t in scan_inputs(2, 7, 3, 2, torch.float64)]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, block=block, tile=tile), inputs)


@pytest.mark.parametrize("batch,length,inner,state", [(1, 1024, 256, 64), (100, 1024, 256, 64), (7, 49, 64, 16)])
def test_scan_plan_keeps_tiles_cache_sized_and_saved_states_bounded(batch, length, inner, state):
    from ssm_models.pscan import MAX_SAVED_STATES_RATIO, TILE_ELEMENTS, scan_plan

    b_tile, e_tile, block = scan_plan(batch, length, inner, state)
    assert b_tile * e_tile * state <= max(TILE_ELEMENTS, state), (b_tile, e_tile)
    saved_per_x = -(-length // block) * state / length
    assert saved_per_x <= MAX_SAVED_STATES_RATIO, (block, saved_per_x)


def test_mamba_trains_in_float64_as_the_default_dtype():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = create_model("mamba", **SMALL)
        x = torch.rand(2, 1, 8, 8, requires_grad=True)
        model(x).logsumexp(-1).sum().backward()
    finally:
        torch.set_default_dtype(previous)
    dtypes = {name: p.dtype for name, p in model.named_parameters() if p.dtype != torch.float64}
    assert dtypes == {}, f"parameters not in float64: {dtypes}"
    assert model.layers[0].mixer.A_log.grad.abs().sum() > 0


def test_sequential_scan_matches_an_explicit_loop():
    x, dt, A, B, C, D = (t.detach() for t in scan_inputs(2, 5, 3, 2, torch.float64))
    h = torch.zeros(2, 3, 2, dtype=torch.float64)
    expected = []
    for t in range(5):
        for b in range(2):
            for e in range(3):
                for n in range(2):
                    h[b, e, n] = math.exp(dt[b, t, e] * A[e, n]) * h[b, e, n] + dt[b, t, e] * B[b, t, n] * x[b, t, e]
        expected.append(torch.einsum("ben,bn->be", h, C[:, t]) + D * x[:, t])
    assert rel_err(selective_scan_sequential(x, dt, A, B, C, D), torch.stack(expected, 1)) < 1e-12


def test_fast_scan_skips_the_parameter_gradient_it_is_not_asked_for():
    x, dt, A, B, C, D = scan_inputs(2, 12, 4, 3, torch.float64)
    A = A.detach()  # frozen parameters during an attack
    y = selective_scan(x, dt, A, B, C, D, block=5)
    grads = torch.autograd.grad(y.sum(), [x, dt])
    reference = torch.autograd.grad(selective_scan_sequential(x, dt, A, B, C, D).sum(), [x, dt])
    assert all(rel_err(a, b) < 1e-10 for a, b in zip(grads, reference))


# ----- the block and the classifier ----------------------------------------------------------------
def test_shapes_gradients_and_probes():
    model = make(ads="relu")
    assert probe_names(model)[2:9] == ["layers.0.in_proj", "layers.0.conv", "layers.0.ssm", "layers.0.gate",
                                       "layers.0.ads", "layers.0.linear", "layers.0.residual_norm"]
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    with record(model) as rec:
        logits = model(x)
    assert logits.shape == (3, 10)
    assert rec["layers.1.in_proj"].shape == (3, 64, 64)
    for component in ("conv", "ssm", "gate", "ads"):  # width E = expand * d_model
        assert rec[f"layers.1.{component}"].shape == (3, 64, 32), component
    assert rec["layers.1.linear"].shape == (3, 64, 16)
    assert_gradients_reach_every_parameter(model, logits, x)


def test_state_dict_keys_shapes_and_initialisation_follow_mamba_ssm():
    mixer = make(d_model=32, d_state=8, d_conv=3, expand=2).layers[0].mixer
    inner, rank = 64, math.ceil(32 / 16)
    assert {k: tuple(v.shape) for k, v in mixer.state_dict().items()} == {
        "A_log": (inner, 8), "D": (inner,), "in_proj.weight": (2 * inner, 32), "conv1d.weight": (inner, 1, 3),
        "conv1d.bias": (inner,), "x_proj.weight": (rank + 16, inner), "dt_proj.weight": (inner, rank),
        "dt_proj.bias": (inner,), "out_proj.weight": (32, inner),
    }
    assert torch.allclose(mixer.A_log, torch.log(torch.arange(1.0, 9.0)).expand(inner, 8))
    assert torch.equal(mixer.D, torch.ones(inner))
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5)
    assert dt.max() <= 1e-1 * (1 + 1e-5)
    assert mixer.dt_proj.weight.abs().max() <= rank ** -0.5


def test_ads_placement():
    inside = make(ads="sigmoid").layers[0]
    assert inside.mixer.ads.scale.in_features == 32
    assert inside.residual_ads is None
    residual = make(ads="sigmoid", ads_position="residual").layers[0]
    assert residual.mixer.ads is None
    assert residual.residual_ads is not None
    assert "layers.0.ads" not in probe_names(make(ads="sigmoid", ads_position="residual"))


@pytest.mark.parametrize("taps", [1, 3, 4])
def test_causal_conv_equals_the_conv1d_module(taps):
    torch.manual_seed(0)
    block = MambaBlock(16, d_state=8, d_conv=taps).double()
    with torch.no_grad():
        block.conv1d.bias.normal_()  # zero-initialised otherwise
    x = torch.randn(3, 20, 32, dtype=torch.float64, requires_grad=True)
    fast, slow = block.causal_conv(x), block.causal_conv_reference(x)
    assert rel_err(fast, slow) < 1e-14
    g = torch.randn_like(fast)
    inputs = (x, block.conv1d.weight, block.conv1d.bias)
    for a, b in zip(torch.autograd.grad(fast, inputs, g), torch.autograd.grad(slow, inputs, g)):
        assert rel_err(a, b) < 1e-14


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_classifier_parallel_scan_equals_sequential_scan(dtype):
    model = make(dtype)
    x = torch.rand(2, 1, 8, 8, dtype=dtype, requires_grad=True)
    with model.frozen():
        fast = model(x)
        (grad_fast,) = torch.autograd.grad(fast.logsumexp(-1).sum(), x)
        for layer in model.layers:
            layer.mixer.ssm.scan = "sequential"
        slow = model(x)
        (grad_slow,) = torch.autograd.grad(slow.logsumexp(-1).sum(), x)
    assert rel_err(fast, slow) < TOLERANCE[dtype]
    assert rel_err(grad_fast, grad_slow) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_recurrent_equals_forward(dtype):
    model = make(dtype, ads="tanh", d_conv=3).eval()
    x = torch.rand(2, 1, 8, 8, dtype=dtype)
    with torch.no_grad():
        assert rel_err(model.forward_recurrent(x), model(x)) < TOLERANCE[dtype]


def test_block_matches_mambapy():
    torch.manual_seed(0)
    ours = MambaBlock(16, d_state=8, d_conv=4, expand=2)
    with torch.no_grad():  # move away from the initialisation so every parameter matters
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    reference = ReferenceMambaBlock(ReferenceConfig(d_model=16, n_layers=1, d_state=8, expand_factor=2, d_conv=4,
                                                    dt_rank=ours.dt_rank))
    reference.load_state_dict(ours.state_dict())  # same attribute names, so no renaming
    u = torch.randn(3, 50, 16, requires_grad=True)
    ours_out, reference_out = ours(u), reference(u)
    assert rel_err(ours_out, reference_out) < 1e-4
    grad_y = torch.randn_like(ours_out)
    (ours_grad,) = torch.autograd.grad(ours_out, u, grad_y)
    (reference_grad,) = torch.autograd.grad(reference_out, u, grad_y)
    assert rel_err(ours_grad, reference_grad) < 1e-4


def test_step_mode_matches_mambapy_step():
    torch.manual_seed(0)
    ours = MambaBlock(8, d_state=4, d_conv=4, expand=2)
    reference = ReferenceMambaBlock(ReferenceConfig(d_model=8, n_layers=1, d_state=4, dt_rank=ours.dt_rank))
    reference.load_state_dict(ours.state_dict())
    u = torch.randn(2, 6, 8)
    state = ours.initial_state(2, u.device, u.dtype)
    cache = (torch.zeros(2, 16, 4), torch.zeros(2, 16, 3))  # mambapy: (h, last d_conv-1 inputs)
    with torch.no_grad():
        for t in range(6):
            y, state = ours.step(u[:, t], state)
            y_ref, cache = reference.step(u[:, t], cache)
            assert rel_err(y, y_ref) < 1e-5
