"""The peer for S4 kernel generation: the reference's naive Cauchy path, written plainly with broadcasting.

For each frequency z_k of the bilinear transform, every Cauchy sum is sum_n v_n / (z_k - w_n) over all 2n
modes (each conjugate pair expanded), done as one broadcast (.., n, L) division; four sums (C~B, C~p, p*B, p*p)
feed the rank-1 Woodbury correction, then the bilinear factor 2/(1+omega) and an inverse real FFT. This is the
computation of the reference S4 `SSKernelNPLR.forward` with `cauchy_naive`, kept in the benchmark as a yardstick.
"""
from __future__ import annotations

import math

import torch

from ssm_models.kernels import as_complex


def cauchy_naive(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_n v_n / (z_k - w_n) with the conjugate half added: v (..., n), z (F,), w (..., n) -> (..., F)."""
    v = torch.cat([v, v.conj()], dim=-1)  # (..., 2n)
    w = torch.cat([w, w.conj()], dim=-1)  # (..., 2n)
    terms = v.unsqueeze(-1) / (z - w.unsqueeze(-1))  # (..., 2n, F): the whole Cauchy matrix in memory
    return terms.sum(dim=-2)  # (..., F)


def naive_nplr_kernel(kernel) -> torch.Tensor:
    """The bilinear kernel (H, T) of an `ssm_models.s4.NPLRKernel`, from its own parameters, the naive way."""
    length = kernel.kernel_length
    dt = torch.exp(kernel.log_dt)  # (H,)
    w = kernel._w() * dt[:, None]  # (H, n): dt folded into A, as the reference does
    b, p, c = as_complex(kernel.B)[0], as_complex(kernel.P)[0], as_complex(kernel.C)[0]  # (1, n), (1, n), (H, n)
    q = p.conj()
    rows = torch.stack(torch.broadcast_tensors(b, p))  # (2, 1, n): B, p
    cols = torch.stack(torch.broadcast_tensors(c, q))  # (2, H, n): C~, p^*
    v = rows[:, None] * cols[None, :]  # (2, 2, H, n)
    omega = torch.tensor(complex(math.cos(-2 * math.pi / length), math.sin(-2 * math.pi / length)),
                         dtype=w.dtype) ** torch.arange(length // 2 + 1)  # (F,) roots of unity, by powers
    z = 2 * (1 - omega) / (1 + omega)  # (F,) the bilinear transform's frequencies
    r = cauchy_naive(v, z, w) * dt[:, None]  # (2, 2, H, F)
    k_f = r[0, 0] - r[0, 1] * r[1, 0] / (1 + r[1, 1])  # (H, F): rank-1 Woodbury correction
    k_f = k_f * 2 / (1 + omega)  # (H, F)
    return torch.fft.irfft(k_f, n=length)  # (H, T)
