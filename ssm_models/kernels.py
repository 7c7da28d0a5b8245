"""Shared pieces of the time-invariant families: FFT long convolution and the attack-mode kernel cache."""
from __future__ import annotations

import math

import torch
from torch import nn


def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_t = sum_{j<=t} k_j u_{t-j} of u (B, L, H) with k (H, L), via a length-2L FFT."""
    length = u.shape[1]
    n = _fft_size(2 * length)
    k_f = torch.fft.rfft(k, n=n)  # (H, n/2+1)
    u_f = torch.fft.rfft(u.transpose(1, 2), n=n)  # (B, H, n/2+1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :length]  # (B, H, L)
    # contiguous: the ops after it (GELU's backward) run 10x slower on the transposed view
    return y.transpose(1, 2).contiguous()  # (B, L, H)


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is fastest on such sizes, and padding to a power of 2 wastes up to 2x."""
    best = 1 << (n - 1).bit_length()
    p2 = 1
    while p2 < best:
        p3 = p2
        while p3 < best:
            p5 = p3
            while p5 < best:
                if p5 >= n:
                    best = p5
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return best


_CACHE_ENABLED = True


def set_kernel_cache(enabled: bool) -> None:
    """Globally switch the attack-mode kernel cache (benchmarks compare both)."""
    global _CACHE_ENABLED
    _CACHE_ENABLED = bool(enabled)


class CachedKernel(nn.Module):
    """Base for modules whose convolution kernel depends only on their parameters.

    Subclasses implement `compute_kernel(length) -> (H, L)` tensor. `kernel(length)` returns it, cached
    while no gradient can flow to the parameters (eval mode and frozen parameters, as during an attack).
    The cache key holds every parameter's identity, version counter and a checksum, so any update
    (optimizer step, load_state_dict, copy_, writes through .data) invalidates it; train(),
    load_state_dict and .to() clear it too.
    """

    def __init__(self):
        super().__init__()
        self._kernel_cache: tuple | None = None

    def compute_kernel(self, length: int) -> torch.Tensor:
        raise NotImplementedError

    def _cache_key(self, length: int) -> tuple:
        # The checksums also catch writes through `.data`, which bypass the version counter.
        params = list(self.parameters())
        sums = torch.stack([torch.stack([p.detach().sum(), p.detach().abs().sum()]).double() for p in params])
        return (length,) + tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params) + tuple(
            sums.flatten().tolist())

    def kernel(self, length: int) -> torch.Tensor:
        needs_param_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        if not _CACHE_ENABLED or self.training or needs_param_grad:
            self._kernel_cache = None
            return self.compute_kernel(length)
        key = self._cache_key(length)
        if self._kernel_cache is not None and self._kernel_cache[0] == key:
            return self._kernel_cache[1]
        with torch.no_grad():
            k = self.compute_kernel(length)
        self._kernel_cache = (key, k)
        return k

    def train(self, mode: bool = True):
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
    batched (L/m, n) @ (n, m) matrix product, instead of H n L exponentials."""
    baby = max(1, math.isqrt(length - 1) + 1)  # ceil(sqrt(L))
    giant = -(-length // baby)
    steps = torch.arange(max(baby, giant), device=coeff.device, dtype=log_da.real.dtype)  # (max(m, J),)
    small = torch.exp(log_da.unsqueeze(-1) * steps[:baby])  # (H, n, m): dA^i
    large = coeff.unsqueeze(-1) * torch.exp(log_da.unsqueeze(-1) * (baby * steps[:giant]))  # (H, n, J)
    blocks = large.transpose(-1, -2) @ small  # (H, J, m)
    return 2 * blocks.flatten(1)[:, :length].real  # (H, L)


def complex_parameter(z: torch.Tensor) -> nn.Parameter:
    """A complex tensor as a parameter in the reference's real-view storage (..., 2), default float dtype."""
    return nn.Parameter(torch.view_as_real(z.resolve_conj()).to(torch.get_default_dtype()).clone())


def kernel_spectrum(k: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rfft of a kernel k (H, >= L) at the FFT size `fft_conv` uses for length L, and its conjugate
    (the adjoint's spectrum): ((H, n/2+1), (H, n/2+1)), for `fixed_kernel_conv`."""
    k_f = torch.fft.rfft(k[:, :length].detach(), n=_fft_size(2 * length))  # (H, n/2+1)
    return k_f, k_f.conj().resolve_conj()


def _spectral_conv(u: torch.Tensor, k_f: torch.Tensor) -> torch.Tensor:
    length = u.shape[1]
    n = _fft_size(2 * length)
    if k_f.shape[-1] != n // 2 + 1:
        raise ValueError(f"kernel spectrum has {k_f.shape[-1]} bins; sequences of length {length} need {n // 2 + 1}")
    u_f = torch.fft.rfft(u.transpose(1, 2), n=n)  # (B, H, n/2+1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :length]  # (B, H, L)
    return y.transpose(1, 2).contiguous()  # (B, L, H); see fft_conv


class _FixedKernelConv(torch.autograd.Function):
    """Causal convolution with a kernel that needs no gradient. Its adjoint is the correlation with the
    same kernel (conjugate spectrum; zero padding to n >= 2L keeps it from wrapping), so the backward
    costs one rfft + irfft instead of autograd's trip back through both transforms."""

    @staticmethod
    def forward(ctx, u, k_f, k_f_conj):
        ctx.save_for_backward(k_f, k_f_conj)
        return _spectral_conv(u, k_f)

    @staticmethod
    def backward(ctx, grad):
        k_f, k_f_conj = ctx.saved_tensors
        return _FixedKernelConv.apply(grad.contiguous(), k_f_conj, k_f), None, None


def fixed_kernel_conv(u: torch.Tensor, spectrum: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """`fft_conv(u, k)` for a constant kernel, `spectrum = kernel_spectrum(k, L)`; gradients reach u only."""
    return _FixedKernelConv.apply(u, *spectrum)
