"""Mamba's element-wise ops with a backward that keeps less alive than autograd's (paper-scale batches)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def softplus_saving_output(x: torch.Tensor) -> torch.Tensor:
    """softplus(x), whose backward keeps its output (the scan keeps dt alive anyway) instead of its input:
    d softplus / dx = sigmoid(x) = 1 - exp(-softplus(x)). One (batch, L, E) tensor less per Mamba layer."""
    return _SoftplusSavingOutput.apply(x)


def silu_gate(y: torch.Tensor, z: torch.Tensor, copy_view: bool = True) -> torch.Tensor:
    """y * silu(z), whose backward keeps y and a copy of z, recomputing silu(z). Autograd would keep silu(z)
    and, through the view z, the whole in_proj output (2E wide) as well: 4 (batch, L, E) tensors become 2.
    `copy_view=False` keeps a view z itself, for callers that recompute it in the backward (`RecomputedSaves`)."""
    return _SiLUGate.apply(y, z, copy_view)


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise causal convolution in the (batch, L, E) layout: y_t = bias + sum_k weight[:, 0, k] x_{t-K+1+k},
    zeros before the first step; weight (E, 1, K) as `nn.Conv1d` holds it. K shifted multiply-adds in place, with
    no padded copy; the backward does the same with the shifts reversed into one gradient tensor, where autograd
    would make two fresh (batch, L, E) tensors per tap (page faults at paper-scale batches) and keep x."""
    return _CausalConv.apply(x, weight, bias)


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        length, taps = x.shape[1], weight.shape[-1]
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        y = torch.empty_like(x, memory_format=torch.contiguous_format)  # (B, L, E)
        y[:, :taps - 1] = bias  # steps that see only the zeros before the first: bias + 0 * w_k
        for tap in range(taps):  # tap K-1 multiplies the current step; the sum runs in tap order, as Conv1d's
            shift = taps - 1 - tap
            if shift >= length:
                continue
            if tap == 0:
                torch.addcmul(bias, x[:, :length - shift], weight[:, 0, tap], out=y[:, shift:])
            else:
                y[:, shift:].addcmul_(x[:, :length - shift], weight[:, 0, tap])
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        length, taps = grad.shape[1], weight.shape[-1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mul(grad, weight[:, 0, taps - 1])  # (B, L, E)
            for tap in range(taps - 1):
                shift = taps - 1 - tap
                if shift < length:
                    grad_x[:, :length - shift].addcmul_(grad[:, shift:], weight[:, 0, tap])
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight)  # (E, 1, K)
            for tap in range(taps):
                shift = taps - 1 - tap
                if shift < length:
                    grad_w[:, 0, tap] = torch.einsum("ble,ble->e", grad[:, shift:], x[:, :length - shift])
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 1))  # (E,)
        return grad_x, grad_w, grad_b


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
        return torch.neg(out).expm1_().mul_(grad).neg_()  # grad sigmoid(x), accurate for tiny outputs too; one tensor


class _SiLUGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, z, copy_view):
        # keep only what the gradients need (nothing without grad); a view of z would pin the tensor it was cut from
        wanted = ctx.needs_input_grad[:2]
        copy = copy_view and z._base is not None
        z_kept = None if not any(wanted) else z.clone(memory_format=torch.contiguous_format) if copy else z
        ctx.save_for_backward(y if wanted[1] else None, z_kept)
        return F.silu(z).mul_(y)  # (..., E)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        y, z = ctx.saved_tensors
        # in place where it can be: each fresh (batch, L, E) tensor costs page faults at paper-scale batches
        grad_y = F.silu(z).mul_(grad) if ctx.needs_input_grad[0] else None
        grad_z = None
        if ctx.needs_input_grad[1]:  # torch's fused SiLU derivative: one pass instead of five element-wise ones
            grad_z = grad * y
            torch.ops.aten.silu_backward.grad_input(grad_z, z, grad_input=grad_z)
        return grad_y, grad_z, None
