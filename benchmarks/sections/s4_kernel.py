"""Section 3: S4 NPLR kernel generation (Cauchy + Woodbury), ours vs the reference's naive Cauchy path."""
from __future__ import annotations

import torch

from ssm_models.s4 import NPLRKernel

from ..harness import measure_interleaved
from ..naive_cauchy import naive_nplr_kernel
from ..results import Row, Target, memory_text
from .common import Settings, Stopwatch, new_section

KEY = "s4-kernel"
TITLE = "S4 NPLR kernel generation: ours vs the naive Cauchy peer"
FULL = dict(d_model=128, d_state=64, length=1024)
QUICK = dict(d_model=8, d_state=8, length=64)
SPEEDUP_TARGET = 2.0


def _forward(make_kernel):
    def step():
        with torch.no_grad():
            make_kernel()
    return step


def _forward_backward(make_kernel, module: NPLRKernel, grad_k: torch.Tensor):
    """Gradients for every kernel parameter, as in training."""
    def step():
        module.zero_grad(set_to_none=True)
        (make_kernel() * grad_k).sum().backward()
    return step


def run(settings: Settings):
    section = new_section(KEY, TITLE, settings)
    size = QUICK if settings.quick else FULL
    with Stopwatch(section):
        torch.manual_seed(0)
        module = NPLRKernel(size["d_model"], size["d_state"], size["length"], disc="bilinear")
        ours, peer = module.cauchy_kernel, lambda: naive_nplr_kernel(module)
        with torch.no_grad():
            k_ours, k_peer = ours(), peer()  # (H, T)
        error = float((k_ours - k_peer).abs().max() / k_ours.abs().max())
        grad_k = torch.randn_like(k_ours)  # (H, T)
        repeats = settings.repeats(15, 2)
        shape = f"H={size['d_model']}, N={size['d_state']} ({module.n_modes} modes), L={module.kernel_length}"
        for mode, wrap in (("forward", lambda f: _forward(f)),
                           ("forward+backward", lambda f: _forward_backward(f, module, grad_k))):
            timings = measure_interleaved({"ours": wrap(ours), "naive": wrap(peer)}, repeats)
            t_ours = section.add_timing(f"ours.{mode}", timings["ours"])
            t_peer = section.add_timing(f"naive.{mode}", timings["naive"])
            section.rows.append(Row(
                key=mode.replace("+", "-"), what=f"S4 kernel {mode} ({shape})", unit="s", ours=t_ours.median,
                ours_cpu=t_ours.cpu_median,
                peer=t_peer.median, peer_name="naive Cauchy", ratio_kind="speedup",
                targets=[Target("ratio", ">=", SPEEDUP_TARGET)], repeats=f"{repeats} each, interleaved",
                memory=memory_text(ours=t_ours.peak_rss_mb, peer=t_peer.peak_rss_mb)))
    section.notes += [
        f"Ours: `NPLRKernel({size['d_model']}, {size['d_state']}, {size['length']}, disc='bilinear').cauchy_kernel()`"
        " (conjugate pairs merged into real-coefficient fractions, the pair denominators as one small real matmul, "
        "frequencies written in z so that z = -1 is finite).",
        "Peer: `benchmarks/naive_cauchy.py`, the reference S4's `cauchy_naive` path written plainly: for every "
        "frequency z, sum_n v_n / (z - w_n) over all 2n modes by broadcasting (the full (2, 2, H, 2n, L/2+1) "
        "complex Cauchy matrix), rank-1 Woodbury correction, bilinear factor 2/(1+omega), inverse real FFT, on the "
        f"same parameters. The two kernels agree to {error:.1e} of the kernel's largest value (float32).",
        "forward: under `torch.no_grad()`; forward+backward: `(k * g).sum().backward()` with a fixed random g, "
        "gradients for every kernel parameter.",
        f"Target from the issue: at least {SPEEDUP_TARGET:g}x the naive path.",
    ]
    return section
