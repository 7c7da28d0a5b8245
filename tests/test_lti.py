"""Time-invariant families (S4, DSS, S5): shapes, gradients, convolution == recurrence, kernels, kernel cache."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from model_helpers import rel_err, seeded_model

from ssm_models import convolution, create_model, kernels, record
from ssm_models.families import arch_defaults
from ssm_models.kernels import CachedKernel, hippo_legs_nplr
from ssm_models.s4 import NPLRKernel

SMALL = dict(d_model=16, d_state=8, n_layers=2, image_size=8)
ARCHS = ["s4", "dss", "s5"]
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


def make(arch: str, dtype=torch.float32, **overrides) -> torch.nn.Module:
    return seeded_model(arch, SMALL, dtype, **overrides)


@pytest.fixture
def cache_switch():
    yield kernels.set_kernel_cache
    kernels.set_kernel_cache(True)


# ----- shapes, gradients, probes -----------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_gradients_and_probes(arch):
    model = make(arch, ads="relu")
    x = torch.rand(3, 1, 8, 8)
    with record(model) as rec:
        logits = model(x)
    assert logits.shape == (3, 10)
    for component in ("ssm", "ads", "linear", "residual_norm"):
        assert rec[f"layers.1.{component}"].shape == (3, 64, 16)
    logits.logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if ".kernel." in name:
            assert p.grad.abs().sum() > 0, name  # the kernel parameters are trained, not just carried


def test_registered_defaults_and_reference_parameter_layout():
    assert arch_defaults("s4") == {"disc": "bilinear"}  # the reference S4 kernel is bilinear
    assert arch_defaults("dss") == {"init": "lin"}
    shapes = {n: tuple(p.shape) for n, p in make("s4").layers[0].mixer.named_parameters()}
    assert shapes == {  # the reference S4 keys, with kernel.kernel. -> ssm.kernel. and D -> ssm.D
        "ssm.kernel.log_dt": (16,), "ssm.kernel.log_w_real": (1, 4), "ssm.kernel.w_imag": (1, 4),
        "ssm.kernel.B": (1, 1, 4, 2), "ssm.kernel.P": (1, 1, 4, 2), "ssm.kernel.C": (1, 16, 4, 2),
        "ssm.D": (1, 16), "output_linear.weight": (16, 16), "output_linear.bias": (16,),
    }
    mixer = make("s4").layers[0].mixer
    assert list(mixer.probe_points) == ["ssm", "act", "ads", "linear"]
    assert mixer.ads is None
    assert mixer.act is None


def test_dt_initialisation_is_inside_the_configured_range():
    model = make("dss", dt_min=0.01, dt_max=0.02)
    dt = torch.exp(model.layers[0].mixer.ssm.kernel.log_dt)
    assert dt.min() >= 0.01 * (1 - 1e-6)
    assert dt.max() <= 0.02 * (1 + 1e-6)


# ----- convolution == recurrence -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_recurrent_equals_forward(arch, disc, dtype):
    model = make(arch, dtype, disc=disc, ads="tanh", activation="gelu").eval()
    x = torch.rand(2, 1, 8, 8, dtype=dtype)
    with torch.no_grad():
        assert rel_err(model.forward_recurrent(x), model(x)) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("arch", ARCHS)
def test_block_output_equals_unrolled_recurrence(arch, disc, dtype):
    """Every layer's `ssm` component: the convolution (S4, DSS) or parallel scan (S5) against its own
    discretised recurrence stepped token by token, on random inputs and on an impulse."""
    ssm = make(arch, dtype, disc=disc).layers[0].mixer.ssm
    u = torch.randn(2, 64, 16, dtype=dtype)
    u[1] = 0
    u[1, 0] = 1  # impulse: the second row is the kernel itself (plus D at t = 0)
    with torch.no_grad():
        state = ssm.initial_state(2, u.device, dtype)
        steps = []
        for t in range(u.shape[1]):
            y_t, state = ssm.step(u[:, t], state)
            steps.append(y_t)
        assert rel_err(ssm(u), torch.stack(steps, dim=1)) < TOLERANCE[dtype]
        if arch == "s5":
            assert rel_err(ssm(u), ssm.forward_sequential(u)) < TOLERANCE[dtype]


# ----- kernels against independent evaluations ------------------------------------------------------
def reference_nplr_kernel(kernel: NPLRKernel, length: int, disc: str) -> np.ndarray:
    """Rebuild the full 2n-dimensional system from the raw parameters in numpy / scipy (float64) and
    unroll y_l = C dA^l dB, with C recovered from the stored C~ = C (I - dA^T)."""
    to_np = lambda t: t.detach().double().numpy()
    w = -np.exp(to_np(kernel.log_w_real)[0]) + 1j * to_np(kernel.w_imag)[0]
    p = to_np(kernel.P)[0, 0] @ np.array([1, 1j])
    b = to_np(kernel.B)[0, 0] @ np.array([1, 1j])
    c_tilde = to_np(kernel.C)[0] @ np.array([1, 1j])  # (H, n)
    p_full, b_full = np.concatenate([p, p.conj()]), np.concatenate([b, b.conj()])
    a = np.diag(np.concatenate([w, w.conj()])) - np.outer(p_full, p_full.conj())
    eye = np.eye(len(a))
    out = []
    for h, dt in enumerate(np.exp(to_np(kernel.log_dt))):
        if disc == "bilinear":
            d_a = np.linalg.solve(eye - dt / 2 * a, eye + dt / 2 * a)
            d_b = np.linalg.solve(eye - dt / 2 * a, dt * b_full)
        else:
            d_a = scipy.linalg.expm(dt * a)
            d_b = np.linalg.solve(a, (d_a - eye) @ b_full)
        c_full = np.concatenate([c_tilde[h], c_tilde[h].conj()])
        c = np.linalg.solve((eye - np.linalg.matrix_power(d_a, kernel.kernel_length)).T, c_full)
        x, ys = d_b, []
        for _ in range(length):
            ys.append(c @ x)
            x = d_a @ x
        out.append(ys)
    out = np.array(out)
    assert np.abs(out.imag).max() < 1e-10 * np.abs(out).max()  # the conjugate-doubled system is real
    return out.real


@pytest.mark.parametrize("disc, length", [("bilinear", 64), ("bilinear", 40), ("bilinear", 100), ("zoh", 64)])
def test_s4_kernel_matches_dense_float64_unroll(disc, length):
    """Cauchy + Woodbury (bilinear, length <= T), truncation (40 < T), the dense path (100 > T, zoh)."""
    torch.manual_seed(1)
    kernel = NPLRKernel(d_model=6, d_state=12, seq_len=64, disc=disc, dt_min=1e-3, dt_max=0.3).double()
    with torch.no_grad():
        kernel.P.mul_(1.7)  # move away from the init so that the rank-1 term is not special
        kernel.w_imag.add_(torch.randn_like(kernel.w_imag))
    expected = torch.from_numpy(reference_nplr_kernel(kernel, length, disc))
    assert rel_err(kernel.compute_kernel(length), expected) < 1e-9


def test_s4_kernel_float32_close_to_float64():
    torch.manual_seed(2)
    kernel = NPLRKernel(d_model=8, d_state=16, seq_len=784)
    exact = kernel.double().cauchy_kernel()
    assert rel_err(kernel.float().cauchy_kernel().double(), exact) < 1e-4


def test_hippo_legs_nplr_reconstructs_legs():
    n_modes = 6
    w, p, b, v = hippo_legs_nplr(n_modes)
    q = torch.arange(2 * n_modes, dtype=torch.float64)
    legs = torch.where(q[:, None] > q[None, :], -torch.sqrt((2 * q[:, None] + 1) * (2 * q[None, :] + 1)), 0.0)
    legs = legs - torch.diag(q + 1)
    v_full = torch.cat([v, v.conj()], dim=1)
    p_full = torch.cat([p, p.conj()])
    rebuilt = v_full @ (torch.diag(torch.cat([w, w.conj()])) - torch.outer(p_full, p_full.conj())) @ v_full.conj().T
    assert torch.allclose(rebuilt, legs.to(rebuilt), atol=1e-10)
    assert torch.allclose(v_full @ torch.cat([b, b.conj()]), torch.sqrt(2 * q + 1).to(rebuilt), atol=1e-10)
    assert torch.allclose(w.real, torch.full_like(w.real, -0.5))


def test_vandermonde_kernel_matches_direct_powers():
    torch.manual_seed(3)
    coeff = torch.randn(5, 7, dtype=torch.complex128)
    log_da = torch.complex(-torch.rand(5, 7) * 0.1, torch.randn(5, 7) * 3).to(torch.complex128)
    for length in (1, 2, 9, 50):
        direct = 2 * (coeff.unsqueeze(-1) * torch.exp(log_da.unsqueeze(-1) * torch.arange(length))).sum(1).real
        assert rel_err(kernels.vandermonde_kernel(coeff, log_da, length), direct) < 1e-12


def test_vandermonde_kernel_real_arithmetic_matches_complex_reference():
    torch.manual_seed(5)
    coeff = torch.randn(4, 6, dtype=torch.complex128, requires_grad=True)
    log_da = torch.complex(-torch.rand(4, 6) * 0.2, torch.randn(4, 6) * 40).to(torch.complex128).requires_grad_()
    for length in (1, 2, 49, 64, 300):
        fast, slow = (f(coeff, log_da, length)
                      for f in (kernels.vandermonde_kernel, kernels.vandermonde_kernel_complex))
        assert rel_err(fast, slow) < 1e-12
        g = torch.randn_like(fast)
        for a, b in zip(torch.autograd.grad(fast, (coeff, log_da), g), torch.autograd.grad(slow, (coeff, log_da), g)):
            assert (a - b).abs().max() <= 1e-12 * max(1.0, float(b.abs().max()))  # zero at length 1: dA^0 = 1


# lengths on both sides of the Toeplitz / FFT switch, and odd ones
CONV_LENGTHS = [1, 7, convolution.DIRECT_MAX_LENGTH, convolution.DIRECT_MAX_LENGTH + 1, 99]


@pytest.mark.parametrize("length", CONV_LENGTHS)
def test_fast_convolutions_match_fft_conv_values_and_gradients(length):
    torch.manual_seed(6)
    u = torch.randn(3, length, 5, dtype=torch.float64, requires_grad=True)
    k = torch.randn(5, length, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, length, 5, dtype=torch.float64)
    y_ref = kernels.fft_conv(u, k)
    grads_ref = torch.autograd.grad(y_ref, (u, k), g)
    for conv in (convolution.causal_conv, convolution._ToeplitzConv.apply, convolution._SpectralConv.apply):
        y = conv(u, k)
        assert rel_err(y, y_ref) < 1e-12, conv
        for a, b in zip(torch.autograd.grad(y, (u, k), g), grads_ref):
            assert rel_err(a, b) < 1e-12, conv
    (grad_u,) = torch.autograd.grad(convolution.causal_conv(u, k.detach()), u, g)  # no kernel gradient asked
    assert rel_err(grad_u, grads_ref[0]) < 1e-12


@pytest.mark.parametrize("length", CONV_LENGTHS)
def test_fixed_kernel_conv_matches_fft_conv_values_and_gradients(length):
    torch.manual_seed(4)
    u = torch.randn(2, length, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, length, dtype=torch.float64)
    y_ref = kernels.fft_conv(u, k)
    g = torch.randn_like(y_ref)
    (grad_ref,) = torch.autograd.grad(y_ref, u, g)
    operators = [kernels.fixed_kernel_operator(k, length), kernels.kernel_spectrum(k, length)]
    assert operators[0][0].is_complex() == (length > convolution.DIRECT_MAX_LENGTH)  # Toeplitz when short
    for operator in operators:
        y = kernels.fixed_kernel_conv(u, operator)
        assert torch.allclose(y, y_ref, atol=1e-12)
        assert torch.allclose(torch.autograd.grad(y, u, g)[0], grad_ref, atol=1e-12)
        if length <= 7:  # twice differentiable (numerical second derivatives: small sizes only)
            assert torch.autograd.gradgradcheck(lambda v, op=operator: kernels.fixed_kernel_conv(v, op), (u,))


@pytest.mark.parametrize("length", [7, convolution.DIRECT_MAX_LENGTH, convolution.DIRECT_MAX_LENGTH + 1])
def test_s5_toeplitz_path_matches_doubling_scan_and_recurrence(length):
    ssm = make("s5", torch.float64).layers[0].mixer.ssm
    with torch.no_grad():  # away from the initialisation, so every parameter matters
        for p in ssm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    u = torch.randn(3, length, 16, dtype=torch.float64, requires_grad=True)
    fast, doubling = ssm(u), ssm.forward_doubling(u)
    assert rel_err(fast, doubling) < 1e-12
    assert rel_err(fast, ssm.forward_sequential(u)) < 1e-12
    g = torch.randn_like(fast)
    params = [u, *ssm.parameters()]
    for a, b in zip(torch.autograd.grad(fast, params, g), torch.autograd.grad(doubling, params, g)):
        assert rel_err(a, b) < 1e-11


# ----- the attack-mode kernel cache ------------------------------------------------------------------
def count_kernel_computations(model) -> list:
    calls = []
    for module in model.modules():
        if isinstance(module, CachedKernel):
            original = module.compute_kernel
            module.compute_kernel = lambda length, _f=original: (calls.append(length), _f(length))[1]
    return calls


def uncached_logits(model, x, cache_switch):
    cache_switch(False)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        cache_switch(True)


def _sgd_step(model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()


def _load_other_weights(model):
    torch.manual_seed(99)
    other = create_model(model.config.arch, **SMALL)
    model.load_state_dict(other.state_dict())


def _write_through_data(model):
    for name, p in model.named_parameters():
        if name.endswith("kernel.log_dt"):
            p.data.add_(0.3)  # bypasses the version counter


def _swap_through_data(model):
    for name, p in model.named_parameters():
        if name.endswith("kernel.log_dt"):
            p.data[:2] = p.data[:2].flip(0).clone()  # same values, moved: sums and absolute sums do not change


def _rebind_data(model):
    for name, p in model.named_parameters():
        if name.endswith("kernel.C"):
            p.data = p.data * 1.5  # a new storage


EVENTS = {
    "optimizer_step": _sgd_step,
    "load_state_dict": _load_other_weights,
    "data_write": _write_through_data,
    "data_swap": _swap_through_data,
    "data_rebind": _rebind_data,
    "train_eval": lambda m: (m.train(), m.eval()),
    "double": lambda m: m.double(),
}


# the invalidation rules live in CachedKernel: every event on S4, two on the other kernels
CACHE_CASES = [("s4", event) for event in EVENTS]
CACHE_CASES += [(arch, event) for arch in ("dss", "s5") for event in ("optimizer_step", "data_write")]


@pytest.mark.parametrize("arch, event", CACHE_CASES)
def test_kernel_cache_reused_when_frozen_and_invalidated_on_change(arch, event, cache_switch):
    model = make(arch)
    calls = count_kernel_computations(model)
    x = torch.rand(2, 1, 8, 8)
    with model.frozen():
        first = model(x)
        assert len(calls) == SMALL["n_layers"]
        second = model(x.requires_grad_())
        assert len(calls) == SMALL["n_layers"]  # cached: no recomputation, input gradients still flow
        assert torch.equal(first, second)
        second.sum().backward()
        assert x.grad is not None
        assert x.grad.abs().sum() > 0
        EVENTS[event](model)
        x = x.detach().to(next(model.parameters()).dtype)
        after = model(x)
        assert len(calls) == 2 * SMALL["n_layers"]  # every layer recomputed
        assert torch.equal(after, uncached_logits(model, x, cache_switch))  # never stale
        if event not in ("train_eval", "double"):
            assert not torch.allclose(after.double(), first.double())  # the change did reach the output


def test_kernel_is_not_cached_while_parameters_need_gradients():
    model = make("dss").eval()
    calls = count_kernel_computations(model)
    x = torch.rand(1, 1, 8, 8)
    model(x)
    model(x)
    assert len(calls) == 2 * SMALL["n_layers"]  # eval mode alone: gradients may still reach the kernel
    with torch.no_grad():
        model(x)
        model(x)
    assert len(calls) == 3 * SMALL["n_layers"]  # no gradients at all: safe to cache


def test_eval_on_a_model_already_in_eval_mode_keeps_the_cached_kernel(cache_switch):
    """The app calls model.eval() before every prediction; that must not throw the kernel away each time."""
    model = make("s4").eval()
    calls = count_kernel_computations(model)
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        model(x)
        model.eval()
        model(x)
    assert len(calls) == SMALL["n_layers"]


def test_frozen_model_input_gradient_equals_uncached(cache_switch):
    model = make("s4", ads="sigmoid")
    x = torch.rand(2, 1, 8, 8)
    grads = []
    for enabled in (True, False):
        cache_switch(enabled)
        with model.frozen():
            xi = x.clone().requires_grad_()
            model(xi).logsumexp(-1).sum().backward()
            grads.append(xi.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    assert math.isfinite(float(grads[0].abs().sum()))
