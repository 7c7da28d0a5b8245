"""DSS / S4D (Gupta et al. 2022; Gu et al. 2022): a diagonal complex state matrix, kernel by Vandermonde product."""
from __future__ import annotations

import torch
from torch import nn

from .errors import ConfigError
from .kernels import (
    CachedKernel,
    as_complex,
    complex_parameter,
    diagonal_init,
    discretize_diagonal,
    init_log_dt,
    vandermonde_kernel,
)
from .registry import register_model
from .s4 import ConvSSM, LTIBlock


class DiagonalKernel(CachedKernel):
    """H kernels K_l = 2 Re sum_n C_n dB_n dA_n^l of diagonal systems with n = N/2 conjugate-pair modes.

    Names mirror the reference's diagonal kernel: w = -exp(log_w_real) + i w_imag (H, n) per channel,
    `B` and `C` (1, H, n, 2) complex in real view, `log_dt` (H). No C~ correction: the kernel is direct.
    """

    def __init__(self, d_model: int, d_state: int, init: str = "lin", disc: str = "zoh",
                 dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        n_modes = max(1, (d_state + 1) // 2)
        self.d_model, self.n_modes, self.disc = d_model, n_modes, disc
        w, b = diagonal_init(init, n_modes)  # (n,)
        dtype = torch.get_default_dtype()
        self.log_dt = nn.Parameter(init_log_dt(d_model, dt_min, dt_max).to(dtype))  # (H,)
        self.log_w_real = nn.Parameter(torch.log(-w.real).expand(d_model, n_modes).to(dtype).clone())  # (H, n)
        self.w_imag = nn.Parameter(w.imag.expand(d_model, n_modes).to(dtype).clone())  # (H, n)
        self.B = complex_parameter(b.expand(1, d_model, n_modes))  # (1, H, n, 2)
        self.C = complex_parameter(torch.randn(1, d_model, n_modes, dtype=torch.complex128))  # (1, H, n, 2)

    def discretize(self):
        """(log dA, dB, C), each (H, n) complex."""
        w = torch.complex(-torch.exp(self.log_w_real), self.w_imag)  # (H, n)
        log_da, b_scale = discretize_diagonal(w, torch.exp(self.log_dt).unsqueeze(-1), self.disc)  # (H, n)
        return log_da, b_scale * as_complex(self.B)[0], as_complex(self.C)[0]

    def compute_kernel(self, length: int) -> torch.Tensor:
        log_da, d_b, c = self.discretize()
        return vandermonde_kernel(c * d_b, log_da, length)  # (H, L)

    def initial_state(self, batch: int, device, dtype: torch.dtype):
        log_da, d_b, c = self.discretize()
        system = (torch.exp(log_da), d_b, c)  # (H, n) each
        x = torch.zeros(batch, self.d_model, self.n_modes, dtype=c.dtype, device=device)  # (B, H, n)
        return x, system

    def step(self, u: torch.Tensor, state):
        x, (d_a, d_b, c) = state
        x = d_a * x + d_b * u.unsqueeze(-1)  # (B, H, n)
        return 2 * (c * x).sum(-1).real, (x, (d_a, d_b, c))  # (B, H)


@register_model("dss", init="lin")
def dss_block(cfg, layer_idx: int) -> LTIBlock:
    """The paper's DSS layer (reference `mode='diag'`): the S4 block with a diagonal kernel."""
    if cfg.init not in ("lin", "inv", "legs"):
        raise ConfigError(f"dss init must be 'lin', 'inv' or 'legs', got {cfg.init!r}")
    kernel = DiagonalKernel(cfg.d_model, cfg.d_state, cfg.init, cfg.disc, cfg.dt_min, cfg.dt_max)
    return LTIBlock(ConvSSM(kernel, cfg.d_model), cfg)
