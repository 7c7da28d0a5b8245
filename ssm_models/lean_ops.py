"""Mamba's element-wise ops with a backward that keeps less alive than autograd's (paper-scale batches)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def softplus_saving_output(x: torch.Tensor) -> torch.Tensor:
    """softplus(x), whose backward keeps its output (the scan keeps dt alive anyway) instead of its input:
    d softplus / dx = sigmoid(x) = 1 - exp(-softplus(x)). One (batch, L, E) tensor less per Mamba layer."""
    return _SoftplusSavingOutput.apply(x)


def silu_gate(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """y * silu(z), whose backward keeps y and a copy of z, recomputing silu(z). Autograd would keep silu(z)
    and, through the view z, the whole in_proj output (2E wide) as well: 4 (batch, L, E) tensors become 2."""
    return _SiLUGate.apply(y, z)


class _SoftplusSavingOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = F.softplus(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return torch.expm1(out.neg()).mul_(grad).neg_()  # grad sigmoid(x), accurate for tiny outputs too


class _SiLUGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, z):
        # keep only what the gradients need (nothing without grad); a view of z would pin the tensor it was cut from
        wanted = ctx.needs_input_grad
        z_kept = None if not any(wanted) else z if z._base is None else z.clone(memory_format=torch.contiguous_format)
        ctx.save_for_backward(y if wanted[1] else None, z_kept)
        return F.silu(z).mul_(y)  # (..., E)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        y, z = ctx.saved_tensors
        grad_y = grad * F.silu(z) if ctx.needs_input_grad[0] else None
        # torch's fused SiLU derivative: one pass instead of five element-wise ones over (batch, L, E)
        grad_z = torch.ops.aten.silu_backward(grad * y, z) if ctx.needs_input_grad[1] else None
        return grad_y, grad_z
