"""Mamba (S6, Gu & Dao 2023) in pure PyTorch; parameter names and initialisation follow mamba_ssm's `Mamba`."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .ads import AdaptiveScaling
from .lean_ops import causal_conv, silu_gate, softplus_saving_output
from .pscan import selective_scan, selective_scan_sequential, selective_scan_tiled
from .recompute import RecomputedSaves
from .registry import register_model

# "parallel": the compiled kernel when built, else "tiled" (pure PyTorch); "sequential": the step-by-step reference
SCANS = {"parallel": selective_scan, "tiled": selective_scan_tiled, "sequential": selective_scan_sequential}
# what the plain backward keeps per layer: five (B, L, E) tensors (xz counts as two halves; pre, x, dt)
KEPT_TENSORS = 5
RECOMPUTE_MIN_BYTES = 16 * 2**20


class SelectiveSSM(nn.Module):
    """The `ssm` probe point: y = selective_scan(x, dt, A, B, C) + D x. Holds no parameters."""

    def __init__(self, scan: str = "parallel"):
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {sorted(SCANS)}, got {scan!r}")
        self.scan = scan

    def forward(self, x, dt, A, B, C, D):
        return SCANS[self.scan](x, dt, A, B, C, D)  # (batch, L, E)

    def extra_repr(self) -> str:
        return f"scan={self.scan!r}"


class SiLUGate(nn.Module):
    """The `gate` probe point: y * silu(z)."""

    def forward(self, y: torch.Tensor, z: torch.Tensor, copy_view: bool = True) -> torch.Tensor:
        return silu_gate(y, z, copy_view)  # (batch, L, E)


def _run(module: nn.Module, x: torch.Tensor, recomputing: bool) -> torch.Tensor:
    return module.forward(x) if recomputing else module(x)  # recomputing: the forward's hooks already fired


def _unmarked(_name: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class MambaBlock(nn.Module):
    """in_proj -> (causal depthwise conv -> SiLU -> selective SSM) * SiLU(z) -> [AdS] -> out_proj.

    State-dict keys equal mamba_ssm's: A_log, D, in_proj.weight, conv1d.weight, conv1d.bias, x_proj.weight,
    dt_proj.weight, dt_proj.bias, out_proj.weight (plus ads.* when AdS is on). AdS has width E = expand * H.

    When the forward builds a graph, `recompute_backward` is on (the default) and the plain path would keep at
    least `recompute_min_bytes` (16 MiB: batches of a few paper-scale images or more), the backward keeps only the
    block's input and the scan's output and recomputes the scan's inputs and the gate's z from them (in_proj,
    conv, SiLU, x_proj, dt_proj, softplus: a fifth of the scan's cost), instead of keeping five (B, L, E)
    tensors per layer: at paper scale (E = 256, L = 1024) that is 100 MB per layer and image batch of 20.
    The recomputation calls the submodules' bare `forward`, so forward hooks fire once; a hook that replaced a
    submodule's output would make it disagree with the forward (the lab's probes only read).
    """

    probe_points = {"in_proj": "in_proj", "conv": "conv_act", "ssm": "ssm", "gate": "gate", "ads": "ads",
                    "linear": "out_proj"}

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank: int | None = None,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dt_init_floor: float = 1e-4, ads: str | None = None,
                 ads_bias: bool = False, scan: str = "parallel"):
        super().__init__()
        inner = expand * d_model
        self.d_inner, self.d_state, self.d_conv = inner, d_state, d_conv
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        # S4D-real initialisation: A_n = -n for every channel, in the default dtype like every other parameter
        # (a float32 A_log under a float64 default broke the scan's backward)
        states = torch.arange(1, d_state + 1, dtype=torch.get_default_dtype())  # (N,)
        self.A_log = nn.Parameter(torch.log(states).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.in_proj = nn.Linear(d_model, 2 * inner, bias=False)
        self.conv1d = nn.Conv1d(inner, inner, d_conv, groups=inner, padding=d_conv - 1, bias=True)
        self.conv_act = nn.SiLU()
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner, bias=True)
        self._init_dt(dt_min, dt_max, dt_init_floor)
        self.ssm = SelectiveSSM(scan)
        self.gate = SiLUGate()
        self.ads = AdaptiveScaling(inner, ads, ads_bias) if ads else None
        self.out_proj = nn.Linear(inner, d_model, bias=False)
        self.recompute_backward = True  # False: autograd keeps every intermediate (the plain reference path)
        # below this many bytes of kept intermediates the plain path runs: recomputing costs about a tenth of an
        # interactive attack's gradient (one image at paper scale keeps 5 MB a layer) and saves memory nobody needs
        self.recompute_min_bytes = RECOMPUTE_MIN_BYTES

    def _init_dt(self, dt_min: float, dt_max: float, floor: float) -> None:
        """mamba_ssm's dt init: softplus(dt_proj.bias) log-uniform in [dt_min, dt_max]."""
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=floor)  # (E,)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True

    def _selection(self, x: torch.Tensor, keep=_unmarked, recomputing: bool = False):
        """Input-dependent (dt, B, C) from the conv branch x (..., E); `keep`, `recomputing` as in `_scan_inputs`."""
        dbc = keep("dbc", _run(self.x_proj, x, recomputing))  # (..., R + 2N)
        dt, B, C = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = _run(self.dt_proj, dt, recomputing)  # (..., E)
        # recomputing, no graph: softplus in place, the same values without one more fresh (B, L, E) tensor
        dt = torch._C._nn.softplus(dt, 1, 20, out=dt) if recomputing else softplus_saving_output(dt)
        return keep("dt", dt), B, C  # (..., E), (..., N), (..., N)

    def _scan_inputs(self, xz: torch.Tensor, keep=_unmarked, recomputing: bool = False):
        """in_proj's output -> causal conv -> SiLU -> selection: the scan's (x, dt, B, C) and the gate's z. `keep`
        names what the backward may recompute; `recomputing` runs submodules bare (their hooks fired already)."""
        x, z = xz.chunk(2, dim=-1)  # (B, L, E) views
        pre = keep("pre", self.causal_conv(x))  # (B, L, E)
        x = keep("x", _run(self.conv_act, pre, recomputing))  # (B, L, E)
        del pre  # the conv output dies here unless a graph keeps it
        dt, B, C = self._selection(x, keep, recomputing)  # (B, L, E), (B, L, N), (B, L, N)
        return x, dt, B, C, z

    def _recomputed_saves(self, u: torch.Tensor) -> RecomputedSaves | None:
        """The backward's recomputation of in_proj and `_scan_inputs` from u, or None when no graph is built or
        it is off. Two stages: the gate's backward, first, needs only z, so x's branch waits for the scan's."""
        if not (self.recompute_backward and torch.is_grad_enabled()):
            return None
        kept_bytes = KEPT_TENSORS * u.shape[:-1].numel() * self.d_inner * u.element_size()
        if kept_bytes < self.recompute_min_bytes:
            return None
        if not (u.requires_grad or any(p.requires_grad for p in self.parameters())):
            return None
        params = [p for m in (self.in_proj, self.conv1d, self.x_proj, self.dt_proj) for p in m.parameters()]

        def in_proj(_earlier: dict) -> dict:
            return {"xz": self.in_proj.forward(u)}

        def conv_branch(earlier: dict) -> dict:
            values = {}
            self._scan_inputs(earlier.pop("xz"), lambda name, t: values.setdefault(name, t), recomputing=True)
            return values

        return RecomputedSaves([in_proj, conv_branch], guard=[u, *params])

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        if self.ads is not None:
            y = self.ads(y)  # (..., E)
        return self.out_proj(y)  # (..., H)

    def causal_conv(self, x: torch.Tensor) -> torch.Tensor:
        """`conv1d` (depthwise, causal) as d_conv shifted multiply-adds in the (B, L, E) layout (`lean_ops`): no
        transposes, and several times faster than the depthwise convolution primitive on a CPU, both ways."""
        return causal_conv(x, self.conv1d.weight, self.conv1d.bias)  # (B, L, E)

    def causal_conv_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Reference path: the convolution module itself, on the channels-first layout."""
        return self.conv1d(x.transpose(1, 2))[..., :x.shape[1]].transpose(1, 2)  # (B, L, E)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        saves = self._recomputed_saves(u)
        with contextlib.nullcontext() if saves is None else saves.saving():
            keep = _unmarked if saves is None else saves.keep
            x, dt, B, C, z = self._scan_inputs(keep("xz", self.in_proj(u)), keep)  # (B, L, E/N), z (B, L, E)
            y = self.ssm(x, dt, -torch.exp(self.A_log), B, C, self.D)  # (B, L, E)
            # z is recomputed too when saves are: a copy of the view would only add a tensor to keep
            return self._output(self.gate(y, z, saves is None))  # (B, L, H)

    # ----- recurrent mode --------------------------------------------------------------------
    def initial_state(self, batch: int, device, dtype: torch.dtype):
        """(last d_conv-1 conv inputs (B, E, d_conv-1), SSM state (B, E, N)), both zero."""
        conv_state = torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype)
        return conv_state, ssm_state

    def step(self, u_t: torch.Tensor, state):
        conv_state, h = state
        x, z = self.in_proj(u_t).chunk(2, dim=-1)  # (B, E) each
        window = torch.cat([conv_state, x[..., None]], dim=-1)  # (B, E, d_conv)
        x = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)  # (B, E)
        dt, B, C = self._selection(x)  # (B, E), (B, N), (B, N)
        h = torch.exp(dt[..., None] * -torch.exp(self.A_log)) * h + (dt * x)[..., None] * B[:, None, :]  # (B, E, N)
        y = (h @ C[..., None])[..., 0] + self.D * x  # (B, E)
        return self._output(y * F.silu(z)), (window[..., 1:], h)


@register_model("mamba", d_state=16)
def mamba_block(cfg, layer_idx: int) -> MambaBlock:
    """The paper's `S6_SSM` layer: mamba_ssm's `Mamba(d_model, d_state, d_conv, expand)`; d_state defaults to 16."""
    ads = cfg.ads if cfg.ads_position == "ssm" else None
    return MambaBlock(cfg.d_model, cfg.d_state, cfg.d_conv, cfg.expand, cfg.resolved_dt_rank, cfg.dt_min,
                      cfg.dt_max, ads=ads, ads_bias=cfg.ads_bias)
