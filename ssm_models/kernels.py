"""Shared pieces of the time-invariant families: the attack-mode kernel cache, discretisation, Vandermonde kernels."""
from __future__ import annotations

import math

import torch
from torch import nn

# the convolutions live in their own module; these names stay importable from here
from .convolution import (  # noqa: F401
    causal_conv,
    fft_conv,
    fixed_kernel_conv,
    fixed_kernel_operator,
    kernel_spectrum,
    with_skip,
)

_CACHE_ENABLED = True


def set_kernel_cache(enabled: bool) -> None:
    """Globally switch the attack-mode kernel cache (benchmarks compare both)."""
    global _CACHE_ENABLED
    _CACHE_ENABLED = bool(enabled)


def parameter_identity(params: list) -> tuple:
    """Each parameter's storage, version counter, dtype and device: any update through autograd changes it."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)


def unchanged(params: list, identity: tuple, values: list) -> bool:
    """Whether `params` still have `identity` (`parameter_identity`) and exactly `values`. The value comparison
    catches writes through `.data`, which bypass the version counter; torch.equal is one op per parameter, with
    no reduction to read back: this runs at every forward pass of an attack."""
    return identity == parameter_identity(params) and all(torch.equal(p, v) for p, v in zip(params, values))


class CachedKernel(nn.Module):
    """Base for modules whose convolution kernel depends only on their parameters.

    Subclasses implement `compute_kernel(length) -> (H, L)` tensor. `kernel(length)` returns it, cached
    while no gradient can flow to the parameters (eval mode and frozen parameters, as during an attack).
    The cache holds every parameter's identity and version counter, and a copy of its values compared
    exactly at each call, so any update (optimizer step, load_state_dict, copy_, writes through .data)
    invalidates it; switching train/eval mode, load_state_dict and .to() clear it too.
    """

    def __init__(self):
        super().__init__()
        self._kernel_cache: tuple | None = None  # (identity, parameter values, kernel)

    def compute_kernel(self, length: int) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _identity(length: int, params: list) -> tuple:
        return (length,) + parameter_identity(params)

    def _cached(self, length: int, params: list):
        """The cached kernel if nothing changed, else None (`unchanged`)."""
        if self._kernel_cache is None:
            return None
        identity, values, k = self._kernel_cache
        if identity[0] != length or not unchanged(params, identity[1:], values):
            return None
        return k

    def kernel(self, length: int) -> torch.Tensor:
        params = list(self.parameters())
        needs_param_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if not _CACHE_ENABLED or self.training or needs_param_grad:
            self._kernel_cache = None
            return self.compute_kernel(length)
        k = self._cached(length, params)
        if k is not None:
            return k
        with torch.no_grad():
            k = self.compute_kernel(length)
            values = [p.detach().clone() for p in params]
        self._kernel_cache = (self._identity(length, params), values, k)
        return k

    def train(self, mode: bool = True):
        if mode != self.training:  # eval() on an eval model (every app request calls it) keeps the kernel
            self._kernel_cache = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._kernel_cache = None
        return super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), .float() move parameters
        self._kernel_cache = None
        return super()._apply(fn, *args, **kwargs)


# ----- shared by S4, DSS and S5: initialisation, discretisation, Vandermonde kernels ------------

def as_complex(x: torch.Tensor) -> torch.Tensor:
    """A complex tensor stored as a real view with a trailing 2 (the reference's storage) -> complex."""
    return torch.view_as_complex(x if x.is_contiguous() else x.contiguous())


def init_log_dt(size: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """log step sizes drawn log-uniformly from [dt_min, dt_max]."""
    low, high = math.log(dt_min), math.log(dt_max)
    return torch.rand(size, dtype=torch.float64) * (high - low) + low  # (size,)


def hippo_legs_nplr(n_modes: int):
    """HiPPO-LegS (state size 2 n_modes) in normal-plus-low-rank form A = V (diag(w) - p p^*) V^*.

    Returns w, P, B (n_modes,) complex128 and V (2 n_modes, n_modes): one mode of each conjugate pair;
    the other half is the complex conjugate of everything, so the full system stays real.
    """
    n = 2 * n_modes
    q = torch.arange(n, dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    legs = -torch.tril(r[:, None] * r[None, :], -1) - torch.diag(q + 1)  # (N, N)
    p = torch.sqrt(q + 0.5)  # (N,): the rank-1 correction that makes LegS normal
    normal = legs + p[:, None] * p[None, :]  # (N, N): -1/2 I + skew-symmetric
    skew = normal + 0.5 * torch.eye(n, dtype=torch.float64)
    # -i * skew is Hermitian, so eigh gives an exactly orthonormal eigenbasis
    freqs, vecs = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # (N,), (N, N)
    order = torch.argsort(freqs)[:n_modes]  # conjugate pairs have opposite frequencies: keep one of each
    w = -0.5 + 1j * freqs[order]  # (n,)
    v = vecs[:, order]  # (N, n)
    v_inv = v.conj().T  # (n, N)
    return w, v_inv @ p.to(v), v_inv @ r.to(v), v


def diagonal_init(init: str, n_modes: int):
    """Diagonal state matrix w and input vector B (n_modes,) complex128: S4D-Lin, S4D-Inv or S4D-LegS."""
    n = torch.arange(n_modes, dtype=torch.float64)
    if init == "lin":
        w = -0.5 + 1j * math.pi * n
    elif init == "inv":
        state = 2 * n_modes
        w = -0.5 + 1j * (state / math.pi) * (state / (2 * n + 1) - 1)
    elif init == "legs":
        w, _, b, _ = hippo_legs_nplr(n_modes)
        return w, b
    else:
        raise ValueError(f"unknown diagonal init {init!r}; use 'lin', 'inv' or 'legs'")
    return w.to(torch.complex128), torch.ones(n_modes, dtype=torch.complex128)


def discretize_diagonal(w: torch.Tensor, dt: torch.Tensor, disc: str):
    """Diagonal continuous system (w, dt broadcastable) -> (log dA, dB / B), so that dA^l = exp(l log dA)."""
    dtw = dt * w
    if disc == "zoh":
        return dtw, torch.expm1(dtw) / w
    if disc == "bilinear":
        half = dtw / 2
        return torch.log((1 + half) / (1 - half)), dt / (1 - half)
    raise ValueError(f"unknown discretisation {disc!r}")


def discretize_dense(a: torch.Tensor, b: torch.Tensor, dt: torch.Tensor, disc: str):
    """Dense continuous system a (N, N), b (N,), per-channel steps dt (H,) -> dA (H, N, N), dB (H, N)."""
    n = a.shape[-1]
    dt = dt.to(a.dtype)[:, None, None]  # (H, 1, 1)
    if disc == "zoh":
        # exp of the augmented matrix [[dt a, dt b], [0, 0]] holds exp(dt a) and its integral times b
        top = torch.cat([a, b[:, None]], dim=-1).expand(dt.shape[0], n, n + 1) * dt  # (H, N, N+1)
        augmented = torch.cat([top, torch.zeros_like(top[:, :1])], dim=1)  # (H, N+1, N+1)
        expm = torch.linalg.matrix_exp(augmented)  # (H, N+1, N+1)
        return expm[:, :n, :n], expm[:, :n, n]
    if disc == "bilinear":
        eye = torch.eye(n, dtype=a.dtype, device=a.device)
        backward = eye - dt / 2 * a  # (H, N, N)
        d_a = torch.linalg.solve(backward, eye + dt / 2 * a)  # (H, N, N)
        d_b = torch.linalg.solve(backward, (dt[..., 0] * b).unsqueeze(-1))[..., 0]  # (H, N)
        return d_a, d_b
    raise ValueError(f"unknown discretisation {disc!r}")


def vandermonde_kernel(coeff: torch.Tensor, log_da: torch.Tensor, length: int) -> torch.Tensor:
    """K_l = 2 Re sum_n coeff_n dA_n^l for l < length: coeff, log_da (H, n) complex -> (H, L) real.

    The factor 2 adds the conjugate half of each mode pair. Writing l = m j + i with m = ceil(sqrt(L)),
    dA^l = dA^(m j) dA^i, so only H n (m + L/m) exponentials are needed and the sum over modes is a
    batched (L/m, n) @ (n, m) matrix product, instead of H n L exponentials. The powers are formed in real
    arithmetic, exp(l a) (cos l b, sin l b) for log dA = a + ib, and only the real part of the product is
    computed: complex exp is not vectorised on CPU and costs several times exp, cos and sin together."""
    baby = max(1, math.isqrt(length - 1) + 1)  # ceil(sqrt(L))
    giant = -(-length // baby)
    dtype = log_da.real.dtype
    steps = torch.arange(baby, device=coeff.device, dtype=dtype)  # (m,)
    steps = torch.cat([steps, baby * torch.arange(giant, device=coeff.device, dtype=dtype)])  # (m + J,): i, then m j
    growth = torch.exp(log_da.real.unsqueeze(-1) * steps)  # (H, n, m + J)
    angle = log_da.imag.unsqueeze(-1) * steps  # (H, n, m + J)
    power_re, power_im = growth * torch.cos(angle), growth * torch.sin(angle)  # dA^step, (H, n, m + J)
    c_re, c_im = coeff.real.unsqueeze(-1), coeff.imag.unsqueeze(-1)  # (H, n, 1)
    large_re = c_re * power_re[..., baby:] - c_im * power_im[..., baby:]  # (H, n, J): coeff dA^(m j)
    large_im = c_re * power_im[..., baby:] + c_im * power_re[..., baby:]
    # Re(large^T small) = large_re^T small_re - large_im^T small_im, one real batched product over 2n
    left = torch.cat([large_re, -large_im], dim=1).transpose(-1, -2)  # (H, J, 2n)
    right = torch.cat([power_re[..., :baby], power_im[..., :baby]], dim=1)  # (H, 2n, m)
    return 2 * (left @ right).flatten(1)[:, :length]  # (H, L)


def vandermonde_kernel_complex(coeff: torch.Tensor, log_da: torch.Tensor, length: int) -> torch.Tensor:
    """Reference for `vandermonde_kernel`: the same baby-step giant-step product in complex arithmetic."""
    baby = max(1, math.isqrt(length - 1) + 1)
    giant = -(-length // baby)
    steps = torch.arange(max(baby, giant), device=coeff.device, dtype=log_da.real.dtype)  # (max(m, J),)
    small = torch.exp(log_da.unsqueeze(-1) * steps[:baby])  # (H, n, m): dA^i
    large = coeff.unsqueeze(-1) * torch.exp(log_da.unsqueeze(-1) * (baby * steps[:giant]))  # (H, n, J)
    blocks = large.transpose(-1, -2) @ small  # (H, J, m)
    return 2 * blocks.flatten(1)[:, :length].real  # (H, L)


def complex_parameter(z: torch.Tensor) -> nn.Parameter:
    """A complex tensor as a parameter in the reference's real-view storage (..., 2), default float dtype."""
    return nn.Parameter(torch.view_as_real(z.resolve_conj()).to(torch.get_default_dtype()).clone())
