"""S5 (Smith et al. 2023): one MIMO diagonal SSM across all H channels, evaluated by a parallel scan over time."""
from __future__ import annotations

import math

import torch
from torch import nn

from .convolution import DIRECT_MAX_LENGTH, toeplitz_operator
from .errors import ConfigError
from .kernels import CachedKernel, as_complex, complex_parameter, diagonal_init, discretize_diagonal, init_log_dt
from .registry import register_model
from .s4 import LTIBlock


class S5Kernel(CachedKernel):
    """x_t = dA x_{t-1} + dB u_t, y_t = 2 Re(C x_t): n = N/2 conjugate-pair modes shared by all channels.

    Parameters: w = -exp(log_w_real) + i w_imag (n,), per-mode `log_dt` (n,), `B` (n, H, 2), `C` (H, n, 2).
    The system is not a set of per-channel convolutions, so `compute_kernel(L)` returns the parameter-only
    part of the scan instead, cached like a kernel: (operator, dB, C), the operator being per-mode Toeplitz
    matrices of dA^(t-s) (real and imaginary parts) for short sequences, else dA^(2^k) for the log2 L
    doubling levels.
    """

    def __init__(self, d_model: int, d_state: int, init: str = "legs", disc: str = "zoh",
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        n_modes = max(1, (d_state + 1) // 2)
        self.d_model, self.n_modes, self.disc = d_model, n_modes, disc
        w, _ = diagonal_init(init, n_modes)  # (n,): 'legs' is S5's HiPPO-N
        dtype = torch.get_default_dtype()
        self.log_dt = nn.Parameter(init_log_dt(n_modes, dt_min, dt_max).to(dtype))  # (n,)
        self.log_w_real = nn.Parameter(torch.log(-w.real).to(dtype))  # (n,)
        self.w_imag = nn.Parameter(w.imag.to(dtype))  # (n,)
        # circular complex normals with the variances of S5's eigenbasis-projected LeCun init
        self.B = complex_parameter(torch.randn(n_modes, d_model, dtype=torch.complex128) / math.sqrt(d_model))
        self.C = complex_parameter(torch.randn(d_model, n_modes, dtype=torch.complex128) / math.sqrt(2 * n_modes))

    def discretize(self):
        """log dA (n,), dB (n, H), C (H, n), complex."""
        w = torch.complex(-torch.exp(self.log_w_real), self.w_imag)  # (n,)
        log_da, b_scale = discretize_diagonal(w, torch.exp(self.log_dt), self.disc)  # (n,)
        return log_da, b_scale.unsqueeze(-1) * as_complex(self.B), as_complex(self.C)

    def compute_kernel(self, length: int):
        log_da, d_b, c = self.discretize()
        if length <= DIRECT_MAX_LENGTH:
            return mode_toeplitz(log_da, length), d_b, c  # ((n, L, L), (n, L, L)), (n, H), (H, n)
        levels = max(0, length - 1).bit_length()
        doublings = 2.0 ** torch.arange(levels, dtype=log_da.real.dtype, device=log_da.device)  # (levels,)
        return torch.exp(doublings.unsqueeze(-1) * log_da), d_b, c  # (levels, n), (n, H), (H, n)


def mode_toeplitz(log_da: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of T[n, s, t] = dA_n^(t - s) for t >= s (0 below), each (n, L, L): the scan
    x_t = dA x_{t-1} + v_t of each mode as one matrix product x = v @ T. Powers in real arithmetic
    (exp(l a) (cos l b, sin l b) for log dA = a + ib): complex exp is not vectorised on CPU."""
    steps = torch.arange(length, dtype=log_da.real.dtype, device=log_da.device)  # (L,)
    growth = torch.exp(log_da.real.unsqueeze(-1) * steps)  # (n, L)
    angle = log_da.imag.unsqueeze(-1) * steps  # (n, L)
    return toeplitz_operator(growth * torch.cos(angle), length), toeplitz_operator(growth * torch.sin(angle), length)


def toeplitz_scan(u: torch.Tensor, operator: tuple[torch.Tensor, torch.Tensor], d_b: torch.Tensor,
                  c: torch.Tensor) -> torch.Tensor:
    """2 Re(C x) for the scan of v = dB u, all as matrix products: u (B, L, H) -> (B, L, H).

    The input projection reads u through a transposed view and writes the modes-major layout the per-mode
    Toeplitz products need; the read-out reads the states back through a transposed view: no layout copies."""
    batch, length, width = u.shape
    n = d_b.shape[0]
    op_re, op_im = operator  # (n, L, L) each
    v = torch.mm(torch.cat([d_b.real, d_b.imag]), u.reshape(-1, width).t()).view(2, n, batch, length)  # (2, n, B, L)
    v_re, v_im = v[0], v[1]  # (n, B, L) each
    x_re = torch.baddbmm(torch.bmm(v_re, op_re), v_im, op_im, alpha=-1)  # (n, B, L): Re(v T)
    x_im = torch.baddbmm(torch.bmm(v_re, op_im), v_im, op_re)  # (n, B, L): Im(v T)
    y = torch.mm(x_re.reshape(n, -1).t(), c.real.t())  # (B*L, H): Re(x) C_re^T
    y = torch.addmm(y, x_im.reshape(n, -1).t(), c.imag.t(), beta=2, alpha=-2)  # 2 Re(C x)
    return y.view(batch, length, width)  # (B, L, H)


def doubling_scan(inputs: torch.Tensor, powers: torch.Tensor) -> torch.Tensor:
    """x_t = a x_{t-1} + inputs_t (x_{-1} = 0) with a constant diagonal a, in log2 L Hillis-Steele steps.

    After step k, x_t sums a^j inputs_{t-j} for j < 2^(k+1). The transition is time-invariant, so the
    scan operator's multiplicative part is just powers[k] = a^(2^k), precomputed from the parameters."""
    x = inputs  # (B, L, n)
    shift = 1
    for power in powers:  # (n,)
        if shift >= x.shape[1]:
            break
        x = torch.cat([x[:, :shift], x[:, shift:] + power * x[:, :-shift]], dim=1)  # (B, L, n)
        shift *= 2
    return x


def _project(u: torch.Tensor, d_b: torch.Tensor) -> torch.Tensor:
    """dB u for real u (..., H) and complex dB (n, H), as one real matmul -> (..., n) complex."""
    both = u @ torch.cat([d_b.real, d_b.imag]).T  # (..., 2n)
    return torch.complex(*both.chunk(2, dim=-1))  # (..., n)


def _read_out(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """2 Re(C x) for complex x (..., n) and C (H, n) -> (..., H) real."""
    return 2 * (x.real @ c.real.T - x.imag @ c.imag.T)  # (..., H)


class S5SSM(nn.Module):
    """The `ssm` component: y = 2 Re(C x) + D u over the whole width, x from the parallel scan."""

    def __init__(self, kernel: S5Kernel, d_model: int):
        super().__init__()
        self.kernel = kernel
        self.D = nn.Parameter(torch.randn(d_model))  # (H,)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        operator, d_b, c = self.kernel.kernel(u.shape[1])
        if isinstance(operator, tuple):  # short sequences: per-mode Toeplitz products
            return torch.addcmul(toeplitz_scan(u.contiguous(), operator, d_b, c), u, self.D)  # (B, L, H)
        x = doubling_scan(_project(u, d_b), operator)  # (B, L, n)
        return torch.addcmul(_read_out(x, c), u, self.D)  # (B, L, H)

    def forward_doubling(self, u: torch.Tensor) -> torch.Tensor:
        """The doubling scan at any length (the path of long sequences): a reference for the Toeplitz path."""
        log_da, d_b, c = self.kernel.discretize()
        levels = max(0, u.shape[1] - 1).bit_length()
        doublings = 2.0 ** torch.arange(levels, dtype=log_da.real.dtype, device=log_da.device)  # (levels,)
        x = doubling_scan(_project(u, d_b), torch.exp(doublings.unsqueeze(-1) * log_da))  # (B, L, n)
        return _read_out(x, c) + u * self.D  # (B, L, H)

    def forward_sequential(self, u: torch.Tensor) -> torch.Tensor:
        """Reference path: the recurrence one step at a time (slow; for tests)."""
        state = self.initial_state(u.shape[0], u.device, u.dtype)
        ys = []
        for t in range(u.shape[1]):
            y, state = self.step(u[:, t], state)  # (B, H)
            ys.append(y)
        return torch.stack(ys, dim=1)  # (B, L, H)

    def initial_state(self, batch: int, device, dtype: torch.dtype):
        log_da, d_b, c = self.kernel.discretize()
        x = torch.zeros(batch, self.kernel.n_modes, dtype=c.dtype, device=device)  # (B, n)
        return x, (torch.exp(log_da), d_b, c)

    def step(self, u: torch.Tensor, state):
        x, (d_a, d_b, c) = state
        x = d_a * x + _project(u, d_b)  # (B, n)
        return _read_out(x, c) + u * self.D, (x, (d_a, d_b, c))  # (B, H)


@register_model("s5")
def s5_block(cfg, layer_idx: int) -> LTIBlock:
    """S5 layer; the reference's `S5(width, width)` has no output linear, added here (GELU-free) for
    consistency with S4 and DSS."""
    if cfg.init not in ("lin", "inv", "legs"):
        raise ConfigError(f"s5 init must be 'lin', 'inv' or 'legs', got {cfg.init!r}")
    kernel = S5Kernel(cfg.d_model, cfg.d_state, cfg.init, cfg.disc, cfg.dt_min, cfg.dt_max)
    return LTIBlock(S5SSM(kernel, cfg.d_model), cfg)
