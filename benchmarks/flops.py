"""FLOPs of one model call (FlopCounterMode for matrix products, formulas for FFTs and scans), and a replay of its
matrix products alone: what the same arithmetic would reach if nothing but those products ran."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


# ----- FFTs: FlopCounterMode does not count them -------------------------------------------------------

def _transform_size(shape, dims) -> tuple[int, int]:
    """(points per transform, number of transforms) of an FFT over `dims` of a tensor of `shape`."""
    points = math.prod(shape[d] for d in dims)
    return points, math.prod(shape) // max(points, 1)


def _fft_flops(points: int, count: int, per_point: float) -> int:
    return int(per_point * points * math.log2(points) * count) if points > 1 else 0


def _r2c_flops(self_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(*_transform_size(self_shape, dim), 2.5)  # a real FFT: half a complex one


def _c2r_flops(self_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(*_transform_size(out_shape, dim), 2.5)


def _c2c_flops(self_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(*_transform_size(self_shape, dim), 5.0)


FFT_FORMULAS = {aten._fft_r2c: _r2c_flops, aten._fft_c2r: _c2r_flops, aten._fft_c2c: _c2c_flops}


# ----- scans: elementwise recurrences, invisible to FlopCounterMode --------------------------------------

def scan_flops(model: torch.nn.Module, batch: int, backward: bool) -> int:
    """Arithmetic of the S5 and Mamba recurrences that runs as elementwise ops (their contractions are matrix
    products, which FlopCounterMode already counts). Backward counts twice the forward, the usual convention."""
    from ssm_models.mamba import MambaBlock
    from ssm_models.s5 import S5SSM

    length = model.config.seq_len
    forward = 0
    for module in model.modules():
        if isinstance(module, S5SSM):
            # doubling scan: at shift s, L - s complex multiply-adds (8 real FLOPs) per mode and image
            shift = 1
            while shift < length:
                forward += 8 * batch * module.kernel.n_modes * (length - shift)
                shift *= 2
        elif isinstance(module, MambaBlock):
            # per state element and step: dt A and its exp (2), the input dt B x (1), h = decay h + input (2)
            forward += 5 * batch * length * module.d_inner * module.d_state
    return forward * (3 if backward else 1)


@dataclass
class FlopCount:
    counted: int  # FlopCounterMode: matrix products and convolutions as executed (complex ones as real ones)
    fft: int  # the formulas above
    scan: int

    @property
    def total(self) -> int:
        return self.counted + self.fft + self.scan


def count_flops(call: Callable[[], object], model: torch.nn.Module, batch: int, backward: bool) -> FlopCount:
    """FLOPs of one `call()` of `model` on `batch` images (`backward`: the call includes a backward pass)."""
    with FlopCounterMode(display=False, custom_mapping=FFT_FORMULAS) as counter:
        call()
    by_op = counter.get_flop_counts().get("Global", {})
    fft = sum(v for op, v in by_op.items() if op in FFT_FORMULAS)
    return FlopCount(counter.get_total_flops() - fft, fft, scan_flops(model, batch, backward))


# ----- the matrix products of a call, replayed alone ------------------------------------------------------

MATMUL_OPS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}


@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple
    stride: tuple
    dtype: torch.dtype

    def make(self) -> torch.Tensor:
        # same strides as in the model (transposed or broadcast operands stay so), fresh values
        extent = 1 + sum((size - 1) * step for size, step in zip(self.shape, self.stride) if size > 0)
        return torch.randn(extent, dtype=self.dtype).as_strided(self.shape, self.stride)


def _spec(value):
    return _TensorSpec(tuple(value.shape), tuple(value.stride()), value.dtype) if torch.is_tensor(value) else value


class _MatmulRecorder(TorchDispatchMode):
    """Records every matrix product dispatched (after autograd and decompositions: linear -> addmm, @ -> bmm)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in MATMUL_OPS:
            self.calls.append((func, tuple(_spec(a) for a in args), {k: _spec(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def matmul_replay(call: Callable[[], object]) -> tuple[Callable[[], None], int]:
    """(replay, FLOPs): `replay()` runs the matrix products one `call()` dispatched, with the same shapes, strides
    and dtypes on fresh tensors, and nothing else; FLOPs as FlopCounterMode counts them."""
    recorder = _MatmulRecorder()
    with recorder:
        call()
    calls = [(func, tuple(a.make() if isinstance(a, _TensorSpec) else a for a in args),
              {k: v.make() if isinstance(v, _TensorSpec) else v for k, v in kwargs.items()})
             for func, args, kwargs in recorder.calls]

    def replay() -> None:
        for func, args, kwargs in calls:
            func(*args, **kwargs)

    with FlopCounterMode(display=False) as counter:
        replay()
    return replay, counter.get_total_flops()
