"""Section 4: training-step throughput of the paper's pixel-level MNIST S4 and DSS, in images/s and GFLOP/s."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ssm_models import create_model

from ..harness import PeakRss, measure
from ..results import Row, memory_text
from .common import QUICK_CONFIG, Settings, Stopwatch, new_section

KEY = "throughput"
TITLE = "Forward+backward of the paper's MNIST configuration, beside torch.matmul's peak"
PAPER_MNIST = dict(d_model=128, n_layers=2, d_state=32, tokenizer="pixel", image_size=28)
FAMILIES = ("s4", "dss")
aten = torch.ops.aten


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


def count_flops(step) -> tuple[int, int]:
    """(FLOPs FlopCounterMode counts natively, estimated FFT FLOPs) of one call of `step`."""
    with FlopCounterMode(display=False, custom_mapping=FFT_FORMULAS) as counter:
        step()
    by_op = counter.get_flop_counts().get("Global", {})
    fft = sum(v for op, v in by_op.items() if op in FFT_FORMULAS)
    return counter.get_total_flops() - fft, fft


def matmul_peak(size: int, repeats: int):
    a, b = torch.randn(size, size), torch.randn(size, size)
    timing = measure(lambda: torch.matmul(a, b), repeats, memory=False)
    return 2 * size**3 / timing.median / 1e9, timing


def run(settings: Settings):
    section = new_section(KEY, TITLE, settings)
    config = {**PAPER_MNIST, **QUICK_CONFIG} if settings.quick else PAPER_MNIST
    batch = 4 if settings.quick else 128
    size = 256 if settings.quick else 2048
    with Stopwatch(section):
        peak, t_mm = matmul_peak(size, settings.repeats(10, 2))
        section.add_timing("matmul", t_mm)
        notes = []
        for arch in FAMILIES:
            torch.manual_seed(0)
            model = create_model(arch, **config).train()
            side = model.config.image_size
            x = torch.rand(batch, 1, side, side, generator=torch.Generator().manual_seed(0))  # (B, 1, S, S)
            y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(1))  # (B,)

            def step():
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()

            with PeakRss() as rss:  # the counted step doubles as the untimed warm-up
                counted, fft = count_flops(step)
            timing = measure(step, settings.repeats(3, 1), warmup=0, memory=False)
            timing.peak_rss_mb = rss.peak_mb
            section.add_timing(arch, timing)
            gflops = (counted + fft) / timing.median / 1e9
            what = f"{arch.upper()} fwd+bwd, batch {batch}, L={model.config.seq_len}"
            section.rows += [
                Row(key=f"{arch}-images", what=f"{what}: images/s", unit="images/s", ours=batch / timing.median,
                    repeats=f"{timing.repeats}", memory=memory_text(ours=timing.peak_rss_mb)),
                Row(key=f"{arch}-gflops", what=f"{what}: GFLOP/s vs matmul", unit="GFLOP/s", ours=gflops,
                    peer=peak, peer_name=f"torch.matmul {size}x{size} float32", ratio_kind="fraction",
                    repeats=f"ours {timing.repeats}, matmul {t_mm.repeats}"),
            ]
            notes.append(f"{arch.upper()}: {timing.median:.3g} s per step; {counted / 1e9:.3g} GFLOP counted by "
                         f"FlopCounterMode + {fft / 1e9:.3g} GFLOP of FFTs (estimated) per step.")
    section.notes += [
        f"Model: `create_model(arch, {', '.join(f'{k}={v!r}' for k, v in config.items())})` in train mode, "
        f"randomly initialised; a training step's work: forward, cross-entropy, backward to every parameter "
        f"(the kernel is regenerated, as in training), batch {batch} of random images.",
        "FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one step counts matrix products and convolutions "
        "(complex products as real ones) but not FFTs nor elementwise work. FFTs are added as an estimate: "
        "5 N log2 N per complex FFT of N points and half that, 2.5 N log2 N, per real-input or real-output FFT "
        "(`_fft_r2c`, `_fft_c2r`), registered as custom formulas. Elementwise FLOPs are not counted at all, so "
        "GFLOP/s understates the arithmetic done.",
        f"Peak: median time of `torch.matmul` on two {size}x{size} float32 matrices (2 n^3 FLOPs), same threads.",
        *notes,
        "No targets: this section is a yardstick (how far a pixel-level SSM step is from the machine's matmul rate).",
    ]
    return section
