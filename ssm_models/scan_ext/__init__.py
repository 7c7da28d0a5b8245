"""The compiled selective scan (scan_kernel.cpp): built once at set-up, loaded at first use only if it matches."""
from __future__ import annotations

import functools
import logging
import os
import sys

import torch
from torch.autograd.function import once_differentiable

from .build import BUILD_DIR, LIBRARY, stamp_matches

ENV_SWITCH = "SSM_LAB_SCAN_EXT"  # "0" forces the PyTorch scan
log = logging.getLogger(__name__)


@functools.cache
def load() -> bool:
    """Load the built library if it matches the source, torch and flags; never compiles. False otherwise
    (logged once, at debug level: the PyTorch scan then does the work)."""
    if not stamp_matches():
        log.debug("no up-to-date compiled scan kernel in %s: using the PyTorch scan", BUILD_DIR)
        return False
    try:
        torch.ops.load_library(str(LIBRARY))
    except (OSError, RuntimeError) as error:
        log.debug("could not load %s (%s): using the PyTorch scan", LIBRARY, error)
        return False
    return True


def enabled() -> bool:
    """Whether `selective_scan` may use the kernel: not switched off by SSM_LAB_SCAN_EXT=0, and built."""
    return os.environ.get(ENV_SWITCH, "1") != "0" and load()


def supports(*tensors: torch.Tensor) -> bool:
    """CPU tensors of one dtype, float32 or float64: what the kernel is compiled for."""
    dtype = tensors[0].dtype
    return dtype in (torch.float32, torch.float64) and all(t.dtype == dtype and t.device.type == "cpu"
                                                           for t in tensors)


def compiled_scan(x, dt, A, B, C, D=None):
    """y_t = C_t h_t (+ D x_t) with h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, h_{-1} = 0, by the kernel.

    x, dt (batch, L, E); A (E, N); B, C (batch, L, N); D (E) or None -> (batch, L, E). Raises if the kernel is
    not built. The D term is added inside, so its input gradient accumulates into the kernel's in place rather
    than as one more (batch, L, E) tensor (one less alive at the backward's peak at paper-scale batches).
    """
    if not load():
        raise RuntimeError(f"the compiled scan kernel is not built: run `{sys.executable} -m ssm_models.scan_ext "
                           "build` (scripts/setup.sh does)")
    return _CompiledScan.apply(x, dt, A, B, C, D)


class _CompiledScan(torch.autograd.Function):
    """Saves only the inputs; the backward recomputes each row's states in a per-thread scratch, so memory
    beyond inputs and outputs is O(threads L N), not O(batch L E N). First-order gradients only."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D):
        ctx.save_for_backward(x, dt, A, B, C, D)
        y = torch.ops.ssm_scan.forward(x, dt, A, B, C)  # (batch, L, E)
        return y if D is None else y.addcmul_(D, x)  # y + D x, in place: the same values as torch.addcmul

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        *inputs, D = ctx.saved_tensors
        dx, ddt, dA, dB, dC = torch.ops.ssm_scan.backward(grad_y, *inputs)
        if D is None:
            return dx, ddt, dA, dB, dC, None
        dD = torch.einsum("ble,ble->e", grad_y, inputs[0]) if ctx.needs_input_grad[5] else None  # (E,)
        return dx.addcmul_(grad_y, D), ddt, dA, dB, dC, dD
