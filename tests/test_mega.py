"""Mega: shapes, gradients, EMA kernel == EMA recurrence, chunked attention, attack-mode kernel cache."""
import pytest
import torch
import torch.nn.functional as F
from model_helpers import assert_gradients_reach_every_parameter, rel_err, seeded_model

from ssm_models import probe_names, record
from ssm_models.kernels import CachedKernel, fft_conv
from ssm_models.mega import EMAKernel, GatedSoftmaxAttention

SMALL = dict(d_model=16, d_state=8, n_layers=2, image_size=8, mega_z_dim=8, mega_hidden=24, mega_ema_dim=4)


def make(dtype=torch.float32, **overrides) -> torch.nn.Module:
    return seeded_model("mega", SMALL, dtype, **overrides)


@pytest.mark.parametrize("chunk", [-1, 24])
def test_shapes_gradients_and_probes(chunk):
    model = make(mega_chunk=chunk, ads="relu")
    assert probe_names(model)[2:8] == ["layers.0.ssm", "layers.0.ads", "layers.0.attn", "layers.0.linear",
                                       "layers.0.gate", "layers.0.residual_norm"]
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    with record(model) as rec:
        logits = model(x)
    assert logits.shape == (3, 10)
    assert rec["layers.1.attn"].shape == (3, 64, 24)  # value width = mega_hidden
    for component in ("ssm", "ads", "linear", "gate"):
        assert rec[f"layers.1.{component}"].shape == (3, 64, 16), component
    assert_gradients_reach_every_parameter(model, logits, x)


def test_ema_kernel_equals_the_damped_ema_recurrence():
    torch.manual_seed(0)
    kernel = EMAKernel(d_model=3, ndim=4).double()
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    alpha = torch.sigmoid(kernel.alpha)[..., 0]  # (H, n)
    delta = torch.sigmoid(kernel.delta)[..., 0]
    beta, eta = kernel.beta[..., 0], kernel.gamma * kernel.scale
    h = torch.zeros(2, 3, 4, dtype=torch.float64)
    outputs = []
    with torch.no_grad():
        for t in range(30):  # Mega eq. (2): h_t = alpha * beta * x_t + (1 - alpha * delta) * h_{t-1}; y_t = eta . h_t
            h = alpha * beta * x[:, t, :, None] + (1 - alpha * delta) * h
            outputs.append((eta * h).sum(-1))
        expected = torch.stack(outputs, 1)  # (B, L, H)
        assert rel_err(fft_conv(x, kernel.compute_kernel(30)), expected) < 1e-10


def test_ema_component_adds_the_omega_skip_and_silu():
    model = make(torch.float64)
    ema = model.layers[0].mixer.ema
    x = torch.randn(2, 64, 16, dtype=torch.float64)
    expected = F.silu(fft_conv(x, ema.kernel.compute_kernel(64)) + ema.omega * x)
    assert rel_err(ema(x), expected) < 1e-12


def test_chunked_attention_attends_within_chunks():
    torch.manual_seed(0)
    full, chunked = GatedSoftmaxAttention(4, 10), GatedSoftmaxAttention(4, 4, chunk=4)
    chunked.rel_pos_bias.data = full.rel_pos_bias.data[6:13].clone()  # offsets -3..3
    q, k, v = torch.randn(2, 10, 4), torch.randn(2, 10, 4), torch.randn(2, 10, 5)
    out = chunked(q, k, v)
    for start, stop in [(0, 4), (4, 8), (8, 10)]:  # two whole chunks and a remainder
        piece = full(q[:, start:stop], k[:, start:stop], v[:, start:stop])
        assert rel_err(out[:, start:stop], piece) < 1e-6
    assert rel_err(full(q, k, v), out) > 1e-3  # full attention does mix across chunks


def test_attention_is_softmax_with_relative_position_bias():
    torch.manual_seed(0)
    attn = GatedSoftmaxAttention(4, 6)
    q, k, v = torch.randn(1, 6, 4), torch.randn(1, 6, 4), torch.randn(1, 6, 3)
    bias = torch.tensor([[attn.rel_pos_bias[j - i + 5].item() for j in range(6)] for i in range(6)])
    expected = torch.softmax(q @ k.transpose(1, 2) / 2 + bias, dim=-1) @ v
    assert rel_err(attn(q, k, v), expected) < 1e-6


def test_block_is_mega_gated_attention_written_out():
    block = make(torch.float64).layers[0].mixer
    x = torch.randn(2, 64, 16, dtype=torch.float64)
    with torch.no_grad():
        ema = block.ema(x)
        u, zr, hx = block.mx_proj(ema).split([16, 8 + 24, 16], dim=-1)
        z, r = F.silu(zr[..., :8]), F.silu(zr[..., 8:])
        q, k = z * block.gamma[0] + block.beta[0], z * block.gamma[1] + block.beta[1]
        w = block.attn.rel_pos_bias
        bias = torch.stack([torch.stack([w[j - i + 63] for j in range(64)]) for i in range(64)])
        attention = torch.softmax(q @ k.transpose(1, 2) / 8 ** 0.5 + bias, dim=-1) @ F.silu(block.v_proj(x))
        h = F.silu(hx + block.h_proj(attention * r))
        expected = torch.sigmoid(u) * h + (1 - torch.sigmoid(u)) * x  # Mega's update gate
        assert rel_err(block(x), expected) < 1e-12


def test_recurrent_mode_is_refused():
    with pytest.raises(NotImplementedError):
        make().forward_recurrent(torch.rand(1, 1, 8, 8))


# ----- attack-mode kernel cache --------------------------------------------------------------------
def count_kernel_computations(model) -> list:
    calls = []
    for layer in model.layers:
        kernel = layer.mixer.ema.kernel
        assert isinstance(kernel, CachedKernel)

        def counted(length, _compute=kernel.compute_kernel):
            calls.append(length)
            return _compute(length)

        kernel.compute_kernel = counted
    return calls


def test_kernel_cache_is_used_while_frozen_and_invalidated_by_updates():
    model, other = make(), make()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    calls = count_kernel_computations(model)
    reference = model(x)  # training mode: no cache
    (reference_grad,) = torch.autograd.grad(reference.sum(), x)
    assert len(calls) == 2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with model.frozen():
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
        for _ in range(3):
            model(x)
        assert len(calls) == 4  # once per layer, then cached
        assert rel_err(out, reference) < 1e-6
        assert rel_err(grad, reference_grad) < 1e-6
        for p in model.parameters():  # an optimizer step while frozen: grads set by hand
            p.grad = torch.full_like(p, 0.01)
        optimizer.step()
        stepped = model(x)
        assert len(calls) == 6
        assert rel_err(stepped, out) > 1e-4
        model.load_state_dict(other.state_dict())
        loaded = model(x)
        assert len(calls) == 8
        assert rel_err(loaded, other.eval()(x)) < 1e-6
        model(x)
        assert len(calls) == 8
        model.train()
        model.eval()
        model(x)
        assert len(calls) == 10
