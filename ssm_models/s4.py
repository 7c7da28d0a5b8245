"""S4 (Gu et al. 2022): HiPPO-LegS in normal-plus-low-rank form, kernel by Cauchy + Woodbury at roots of unity."""
from __future__ import annotations

import math

import torch
from torch import nn

from .ads import AdaptiveScaling
from .errors import ConfigError
from .kernels import (
    CachedKernel,
    as_complex,
    causal_conv,
    complex_parameter,
    discretize_dense,
    fixed_kernel_conv,
    fixed_kernel_operator,
    hippo_legs_nplr,
    init_log_dt,
    parameter_identity,
    unchanged,
    with_skip,
)
from .registry import register_model


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class NPLRKernel(CachedKernel):
    """H single-input single-output kernels of x' = A x + B u, y = C x with A = diag(w) - p p^* (rank 1).

    N = 2n state dimensions are stored as n modes, one of each conjugate pair; the full (real) system is
    w_full = [w, conj w], p_full = [P, conj P], likewise B and C. Parameter names and shapes mirror the
    reference `SSKernelNPLR`, so importing its state dict is a rename: `C` (1, H, n, 2) holds
    C~ = C (I - dA^T) for T = `kernel_length` (the reference's length after doubling: the power of two
    >= the sequence length), `B` and `P` (1, 1, n, 2) are shared by all channels, w = -exp(log_w_real)
    + i w_imag (1, n) and `log_dt` (H). With disc='bilinear' (the reference) the kernel comes from its
    generating function at the T-th roots of unity; with 'zoh' from the dense discretised system.
    """

    def __init__(self, d_model: int, d_state: int, seq_len: int, disc: str = "bilinear",
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        n_modes = max(1, (d_state + 1) // 2)
        self.d_model, self.n_modes, self.disc = d_model, n_modes, disc
        self.kernel_length = 1 << max(0, seq_len - 1).bit_length()
        w, p, b, _ = hippo_legs_nplr(n_modes)
        dtype = torch.get_default_dtype()
        self.log_dt = nn.Parameter(init_log_dt(d_model, dt_min, dt_max).to(dtype))  # (H,)
        self.log_w_real = nn.Parameter(torch.log(-w.real)[None].to(dtype))  # (1, n)
        self.w_imag = nn.Parameter(w.imag[None].to(dtype))  # (1, n)
        self.B = complex_parameter(b[None, None])  # (1, 1, n, 2)
        self.P = complex_parameter(p[None, None])  # (1, 1, n, 2)
        c = torch.randn(d_model, n_modes, dtype=torch.complex128)  # (H, n): the true C
        self.C = complex_parameter(self._c_tilde(c)[None])  # (1, H, n, 2)

    # ----- the full conjugate-doubled system --------------------------------------------------------
    def _w(self) -> torch.Tensor:
        return torch.complex(-torch.exp(self.log_w_real), self.w_imag)  # (1, n)

    def _continuous(self, cdtype: torch.dtype):
        w = self._w()[0].to(cdtype)  # (n,)
        p = as_complex(self.P)[0, 0].to(cdtype)  # (n,)
        b = as_complex(self.B)[0, 0].to(cdtype)  # (n,)
        p_full = torch.cat([p, p.conj()])  # (N,)
        a = torch.diag(torch.cat([w, w.conj()])) - p_full[:, None] * p_full.conj()[None, :]  # (N, N)
        return a, torch.cat([b, b.conj()])  # (N, N), (N,)

    def _discrete(self, cdtype: torch.dtype):
        a, b = self._continuous(cdtype)
        return discretize_dense(a, b, torch.exp(self.log_dt).to(a.real.dtype), self.disc)  # (H, N, N), (H, N)

    def _truncation(self, d_a: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(d_a.shape[-1], dtype=d_a.dtype, device=d_a.device)
        return eye - torch.linalg.matrix_power(d_a, self.kernel_length)  # (H, N, N)

    @torch.no_grad()
    def _c_tilde(self, c: torch.Tensor) -> torch.Tensor:
        """C (H, n) -> C~ = C (I - dA^T): the generating function at T-th roots of unity then truncates at T."""
        d_a, _ = self._discrete(torch.complex128)
        c_full = torch.cat([c, c.conj()], dim=-1)  # (H, N)
        return (c_full.unsqueeze(1) @ self._truncation(d_a))[:, 0, : self.n_modes]  # (H, n)

    def dense_system(self, cdtype: torch.dtype):
        """dA (H, N, N), dB (H, N) and the true C (H, N) = C~ (I - dA^T)^-1, so y_t = Re(C x_t)."""
        d_a, d_b = self._discrete(cdtype)
        c_tilde = as_complex(self.C)[0].to(cdtype)  # (H, n)
        c_full = torch.cat([c_tilde, c_tilde.conj()], dim=-1)  # (H, N)
        c = torch.linalg.solve(self._truncation(d_a).transpose(-1, -2), c_full.unsqueeze(-1))[..., 0]  # (H, N)
        return d_a, d_b, c

    # ----- kernels --------------------------------------------------------------------------------
    def compute_kernel(self, length: int) -> torch.Tensor:
        if self.disc == "bilinear" and length <= self.kernel_length:
            return self.cauchy_kernel()[:, :length]  # (H, L)
        d_a, d_b, c = self.dense_system(_complex_dtype(self.log_dt.dtype))
        return impulse_response(c, d_a, d_b, length).real  # (H, L)

    def cauchy_kernel(self) -> torch.Tensor:
        """Bilinear kernel of length T from its generating function sum_l K_l z^l = dt C~ M(z)^-1 B at
        z = exp(-2 pi i k / T), with M(z) = (1 - z) I - (1 + z) dt/2 A, inverted by Woodbury.

        Written in z (not in the reference's 2(1-z)/(1+z), which is infinite at z = -1), and with each
        conjugate pair merged into one real-coefficient fraction: Cauchy sums over n modes, not 2n."""
        length = self.kernel_length
        dt = torch.exp(self.log_dt)  # (H,)
        mu = self._w() * (dt[:, None] / 2)  # (H, n)
        b, p = as_complex(self.B)[0], as_complex(self.P)[0]  # (1, n)
        rows = torch.stack(torch.broadcast_tensors(as_complex(self.C)[0], p.conj()))  # (2, H, n): C~, p^*
        cols = torch.stack([b, p])  # (2, 1, n): B, p
        v = rows[:, None] * cols[None, :]  # (2, 2, H, n): (C~B, C~p, p*B, p*p)
        # v/(a - b mu) + conj(v)/(a - b conj(mu)) = (a 2Re v - b 2Re(v conj mu)) / (a^2 - 2 Re(mu) ab + |mu|^2 b^2)
        coef = torch.cat([2 * v.real, 2 * (v * mu.conj()).real]).reshape(8, *mu.shape).transpose(0, 1)  # (H, 8, n)
        basis, a, bz = _unit_circle_terms(length, mu.real.dtype, mu.device)  # (3, 2F), (F,), (F,)
        # the pair denominator a^2 - 2 Re(mu) ab + |mu|^2 b^2 is a rank-3 product: one small real matmul
        weights = torch.stack([torch.ones_like(mu.real), mu.real, mu.real.square() + mu.imag.square()], -1)  # (H, n, 3)
        inv_den = torch.reciprocal(torch.view_as_complex((weights @ basis).unflatten(-1, (-1, 2))))  # (H, n, F)
        sums = coef @ torch.view_as_real(inv_den).flatten(-2)  # (H, 8, 2F)
        sums = torch.view_as_complex(sums.unflatten(-1, (-1, 2)))  # (H, 8, F)
        s = a * sums[:, :4] - bz * sums[:, 4:]  # (H, 4, F)
        rank_one = bz * (dt[:, None] / 2)  # (H, F)
        k_hat = dt[:, None] * (s[:, 0] - rank_one * s[:, 1] * s[:, 2] / (1 + rank_one * s[:, 3]))  # (H, F)
        return torch.fft.irfft(k_hat, n=length)  # (H, T)

    # ----- recurrence -----------------------------------------------------------------------------
    def initial_state(self, batch: int, device, dtype: torch.dtype):
        """State and the discretised system (built once per sequence, in float64, then cast)."""
        cdtype = _complex_dtype(dtype)
        system = tuple(t.to(cdtype) for t in self.dense_system(torch.complex128))
        x = torch.zeros(batch, self.d_model, 2 * self.n_modes, dtype=cdtype, device=device)  # (B, H, N)
        return x, system

    def step(self, u: torch.Tensor, state):
        x, (d_a, d_b, c) = state
        x = torch.einsum("hmn,bhn->bhm", d_a, x) + d_b * u.unsqueeze(-1).to(x.dtype)  # (B, H, N)
        return (x * c).sum(-1).real, (x, (d_a, d_b, c))  # (B, H)


_UNIT_CIRCLE: dict[tuple, tuple] = {}


def _unit_circle_terms(length: int, dtype: torch.dtype, device) -> tuple:
    """Parameter-free terms of `cauchy_kernel` at the T-th roots of unity z_k = exp(-2 pi i k / T), k <= T/2,
    computed once per (T, dtype, device) in float64 for exact nodes: the rank-3 basis (a^2, -2ab, b^2) of the
    pair denominators with real and imaginary parts interleaved (3, 2F), and a = 1 - z, b = 1 + z (F,) complex."""
    key = (length, dtype, str(device))
    if key not in _UNIT_CIRCLE:
        angle = torch.arange(length // 2 + 1, dtype=torch.float64, device=device) * (-2 * math.pi / length)  # (F,)
        z = torch.polar(torch.ones_like(angle), angle)  # (F,)
        a, b = 1 - z, 1 + z
        basis = torch.view_as_real(torch.stack([a * a, -2 * a * b, b * b])).to(dtype).flatten(-2)  # (3, 2F)
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        _UNIT_CIRCLE[key] = (basis, a.to(cdtype), b.to(cdtype))
    return _UNIT_CIRCLE[key]


def impulse_response(c: torch.Tensor, d_a: torch.Tensor, d_b: torch.Tensor, length: int) -> torch.Tensor:
    """c dA^l dB for l < length, (H, L): sqrt(L) baby steps dA^i dB, sqrt(L) giant steps c dA^(m j)."""
    baby = max(1, math.isqrt(length - 1) + 1)  # ceil(sqrt(L))
    giant = -(-length // baby)
    cols = [d_b]
    for _ in range(baby - 1):
        cols.append(torch.einsum("hmn,hn->hm", d_a, cols[-1]))
    jump = torch.linalg.matrix_power(d_a, baby)  # (H, N, N)
    rows = [c]
    for _ in range(giant - 1):
        rows.append(torch.einsum("hm,hmn->hn", rows[-1], jump))
    blocks = torch.stack(rows, dim=1) @ torch.stack(cols, dim=-1)  # (H, giant, baby)
    return blocks.flatten(1)[:, :length]  # (H, L)


class ConvSSM(nn.Module):
    """The `ssm` component: y = k * u + D u, a causal convolution with a CachedKernel plus the skip."""

    def __init__(self, kernel: CachedKernel, d_model: int):
        super().__init__()
        self.kernel = kernel
        self.D = nn.Parameter(torch.randn(1, d_model))  # (1, H), as in the reference
        self._operator: tuple | None = None  # (kernel tensor, settings, D's identity and values, operator)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        k = self.kernel.kernel(u.shape[1])  # (H, L)
        if k.requires_grad:  # training: gradients reach the kernel's parameters
            return torch.addcmul(causal_conv(u, k), u, self.D)  # (B, L, H)
        # constant kernel (e.g. cached during an attack): reuse its operator (Toeplitz matrices or spectrum)
        # while the cache returns the very same tensor, and back-propagate to u with one correlation
        if torch.is_grad_enabled() and self.D.requires_grad:  # D still learns: its term stays apart
            return torch.addcmul(fixed_kernel_conv(u, self._operator_for(k, u.shape[1], False)), u, self.D)  # (B, L, H)
        # D constant too (attacks, evaluation): D u is lag 0 of the convolution, so no pass of its own, and the
        # result may be a transposed view for the block's output linear to read in place; a copy when a hook
        # (a probe) keeps the output, as the view would keep the FFT's whole (B, H, 2L) result alive
        watched = bool(self._forward_hooks)
        return fixed_kernel_conv(u, self._operator_for(k, u.shape[1], True), contiguous=watched)  # (B, L, H)

    def _operator_for(self, k: torch.Tensor, length: int, fold_skip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The operator of k (with D folded in when asked), reused while k is the very same tensor and D is
        `unchanged`, the test CachedKernel applies to its parameters (writes through .data count too)."""
        cached, settings = self._operator, (fold_skip, length)
        if cached is None or cached[0] is not k or cached[1] != settings or not unchanged([self.D], *cached[2:4]):
            kernel = with_skip(k, self.D) if fold_skip else k  # (H, L)
            cached = (k, settings, parameter_identity([self.D]), [self.D.detach().clone()],
                      fixed_kernel_operator(kernel, length))
            self._operator = cached
        return cached[4]

    def initial_state(self, batch: int, device, dtype: torch.dtype):
        return self.kernel.initial_state(batch, device, dtype)

    def step(self, u: torch.Tensor, state):
        y, state = self.kernel.step(u, state)  # (B, H)
        return y.to(u.dtype) + u * self.D, state


class LTIBlock(nn.Module):
    """ssm -> [activation] -> optional AdS -> output_linear. The reference builds a GELU but never calls it, so
    `activation=None` (the default) reproduces it; `activation='gelu'` is the standard S4 block."""

    probe_points = {"ssm": "ssm", "act": "act", "ads": "ads", "linear": "output_linear"}

    def __init__(self, ssm: nn.Module, cfg):
        super().__init__()
        self.ssm = ssm
        self.act = nn.GELU() if cfg.activation == "gelu" else None
        use_ads = cfg.ads is not None and cfg.ads_position == "ssm"
        self.ads = AdaptiveScaling(cfg.d_model, cfg.ads, cfg.ads_bias) if use_ads else None
        self.output_linear = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ssm(x)  # (B, L, H), possibly a transposed view that only the output linear reads in place
        if self.act is not None or self.ads is not None:
            y = y.contiguous()  # elementwise backwards run far slower on the transposed view (see fft_conv)
        if self.act is not None:
            y = self.act(y)  # (B, L, H)
        if self.ads is not None:
            y = self.ads(y)  # (B, L, H)
        return self.output_linear(y)  # (B, L, H)

    def initial_state(self, batch: int, device, dtype: torch.dtype):
        return self.ssm.initial_state(batch, device, dtype)

    def step(self, x_t: torch.Tensor, state):
        y, state = self.ssm.step(x_t, state)  # (B, H)
        if self.act is not None:
            y = self.act(y)
        if self.ads is not None:
            y = self.ads(y)
        return self.output_linear(y), state


@register_model("s4", disc="bilinear")
def s4_block(cfg, layer_idx: int) -> LTIBlock:
    """The paper's S4 layer (reference `mode='nplr'`, LegS, rank 1); disc defaults to the reference's bilinear."""
    if cfg.init != "legs":
        raise ConfigError(f"s4 supports init='legs' only (got {cfg.init!r}); use dss for diagonal inits")
    kernel = NPLRKernel(cfg.d_model, cfg.d_state, cfg.seq_len, cfg.disc, cfg.dt_min, cfg.dt_max)
    return LTIBlock(ConvSSM(kernel, cfg.d_model), cfg)
