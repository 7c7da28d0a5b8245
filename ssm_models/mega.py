"""Mega (Ma et al. 2023): damped EMA + gated attention; unlike the reference, the shell adds residual + LayerNorm."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ads import AdaptiveScaling
from .kernels import CachedKernel, causal_conv, fixed_kernel_conv, fixed_kernel_operator
from .registry import register_model


class EMAKernel(CachedKernel):
    """k[d, t] = scale * sum_n gamma[d, n] alpha[d, n] beta[d, n] (1 - alpha[d, n] delta[d, n])^t.

    Named as in the paper: alpha = sigmoid(self.alpha) weights the input and delta = sigmoid(self.delta)
    damps it (fairseq's MultiHeadEMA swaps the two names; the kernel family is the same). Shapes follow
    fairseq: delta, alpha, beta (H, n, 1), gamma (H, n); scale = 1/sqrt(n).
    """

    def __init__(self, d_model: int, ndim: int):
        super().__init__()
        self.scale = math.sqrt(1.0 / ndim)
        self.delta = nn.Parameter(torch.randn(d_model, ndim, 1) * 0.2)
        self.alpha = nn.Parameter(torch.randn(d_model, ndim, 1) * 0.2)
        # beta alternates +1, -1 across the n dimensions (fairseq: "seems more stable")
        signs = torch.ones(ndim, 1)
        signs[1::2] = -1.0
        self.beta = nn.Parameter(torch.randn(d_model, ndim, 1) * 0.02 + signs)
        self.gamma = nn.Parameter(torch.randn(d_model, ndim))

    def coefficients(self):
        """(input weight alpha, decay q = 1 - alpha delta), each (H, n, 1) in (0, 1)."""
        alpha = torch.sigmoid(self.alpha)
        return alpha, 1.0 - alpha * torch.sigmoid(self.delta)

    def compute_kernel(self, length: int) -> torch.Tensor:
        alpha, q = self.coefficients()  # (H, n, 1)
        t = torch.arange(length, dtype=q.dtype, device=q.device)  # (L,)
        powers = torch.exp(t * torch.log(q))  # (H, n, L), q^t without overflow
        return torch.einsum("dnl,dn->dl", alpha * self.beta * powers, self.gamma * self.scale)  # (H, L)


class MultiDimEMA(nn.Module):
    """The `ssm` probe point: silu(EMA(x) + omega * x), the EMA as a causal FFT convolution."""

    def __init__(self, d_model: int, ndim: int):
        super().__init__()
        self.kernel = EMAKernel(d_model, ndim)
        self.omega = nn.Parameter(torch.randn(d_model))
        self._operator: tuple | None = None  # (kernel tensor, its operator) while the cache returns the same kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel.kernel(x.shape[1])  # (H, L)
        if k.requires_grad:
            y = causal_conv(x, k)  # (B, L, H)
        else:  # fixed kernel (attack mode): reuse its operator, back-propagate to x only
            if self._operator is None or self._operator[0] is not k:
                self._operator = (k, fixed_kernel_operator(k, x.shape[1]))
            y = fixed_kernel_conv(x, self._operator[1])  # (B, L, H)
        return F.silu(torch.addcmul(y, x, self.omega))  # (B, L, H)


class GatedSoftmaxAttention(nn.Module):
    """The `attn` probe point: softmax(q k^T / sqrt(z) + bias[j - i]) v, over the whole sequence or in chunks."""

    probe_input = 2  # the analysis compares the output with v, the values it averages (q, k only weight them)

    def __init__(self, z_dim: int, max_positions: int, chunk: int = -1):
        super().__init__()
        self.scaling = z_dim ** -0.5
        self.chunk = chunk
        self.max_positions = max_positions
        self.rel_pos_bias = nn.Parameter(torch.randn(2 * max_positions - 1) * 0.02)

    def position_bias(self, length: int) -> torch.Tensor:
        if length > self.max_positions:
            raise ValueError(f"sequence of {length} tokens exceeds the {self.max_positions} positions of the bias")
        pos = torch.arange(length, device=self.rel_pos_bias.device)
        return self.rel_pos_bias[pos[None, :] - pos[:, None] + self.max_positions - 1]  # (L, L)

    def _attend(self, q, k, v):
        # bias + scaling * q k^T in one call: no separate passes over q and over the (B, L, L) scores
        scores = torch.baddbmm(self.position_bias(q.shape[1]), q, k.transpose(1, 2), alpha=self.scaling)  # (B, L, L)
        return torch.softmax(scores, dim=-1) @ v  # (B, L, V)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, length, _ = q.shape
        if self.chunk <= 0 or self.chunk >= length:
            return self._attend(q, k, v)  # (B, L, V)
        c = self.chunk
        full = length // c * c
        parts = []
        if full:  # whole chunks as extra batch entries
            q_c, k_c, v_c = (t[:, :full].reshape(b * (full // c), c, t.shape[-1]) for t in (q, k, v))
            parts.append(self._attend(q_c, k_c, v_c).reshape(b, full, -1))
        if full < length:
            parts.append(self._attend(q[:, full:], k[:, full:], v[:, full:]))
        return torch.cat(parts, dim=1)  # (B, L, V)


class UpdateGate(nn.Module):
    """The `gate` probe point: u * h + (1 - u) * x."""

    probe_input = 1  # the analysis compares the gate's output with h, the candidate it lets through

    def forward(self, u: torch.Tensor, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, u, h - x)  # (B, L, H)


class MegaBlock(nn.Module):
    """Mega's moving-average gated attention (fairseq `MovingAverageGatedAttention`, single head).

    Differences from the reference's `MegaLRAEncoder` layer, on purpose: no norm or feed-forward sub-layer
    inside; the shell wraps the block in `LayerNorm(x + block(x))` like every other family (the reference
    skipped that outer residual and norm because its Mega layers normalise internally). Relative position
    bias: Mega's "simple" one, a learnable scalar per offset j - i.

    ema = EMA(x); [AdS]; u, z, r, hx = mx_proj(ema) split; q, k = z * gamma + beta; v = silu(v_proj(x));
    h = silu(hx + h_proj(attn(q, k, v) * r)); out = u h + (1 - u) x.
    """

    # the EMA is Mega's SSM: probing it as `ssm` lines it up with the other families in the analysis
    probe_points = {"ssm": "ema", "ads": "ads", "attn": "attn", "linear": "h_proj", "gate": "gate"}

    def __init__(self, d_model: int, z_dim: int, hidden: int, ndim: int, max_positions: int, chunk: int = -1,
                 ads: str | None = None, ads_bias: bool = False):
        super().__init__()
        self.d_model, self.z_dim, self.hidden = d_model, z_dim, hidden
        self.ema = MultiDimEMA(d_model, ndim)
        self.ads = AdaptiveScaling(d_model, ads, ads_bias) if ads else None
        self.v_proj = nn.Linear(d_model, hidden)
        self.mx_proj = nn.Linear(d_model, z_dim + hidden + 2 * d_model)
        self.h_proj = nn.Linear(hidden, d_model)
        self.gamma = nn.Parameter(torch.randn(2, z_dim) * 0.02)  # per-dimension scale of q and k
        self.beta = nn.Parameter(torch.zeros(2, z_dim))  # per-dimension offset of q and k
        self.attn = GatedSoftmaxAttention(z_dim, max_positions if chunk <= 0 else chunk, chunk)
        self.gate = UpdateGate()
        for linear in (self.v_proj, self.mx_proj, self.h_proj):
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = F.silu(self.v_proj(x))  # (B, L, V)
        mx = self.ema(x)  # (B, L, H)
        if self.ads is not None:
            mx = self.ads(mx)  # (B, L, H)
        u, zr, hx = self.mx_proj(mx).split([self.d_model, self.z_dim + self.hidden, self.d_model], dim=-1)
        z, r = F.silu(zr).split([self.z_dim, self.hidden], dim=-1)  # (B, L, Z), (B, L, V)
        # two fused multiply-adds rather than one (B, L, 2, Z) tensor unbound: its backward would stack
        q = torch.addcmul(self.beta[0], z, self.gamma[0])  # (B, L, Z)
        k = torch.addcmul(self.beta[1], z, self.gamma[1])  # (B, L, Z)
        h = self.attn(q, k, v)  # (B, L, V)
        h = F.silu(hx + self.h_proj(h * r))  # (B, L, H)
        return self.gate(torch.sigmoid(u), h, x)  # (B, L, H)

    def initial_state(self, batch: int, device, dtype: torch.dtype):
        raise NotImplementedError("Mega attends over the whole sequence; it has no recurrent mode")


@register_model("mega")
def mega_block(cfg, layer_idx: int) -> MegaBlock:
    """The paper's Mega layer: z_dim = mega_z_dim, value dim = mega_hidden, EMA dims = mega_ema_dim."""
    ads = cfg.ads if cfg.ads_position == "ssm" else None
    return MegaBlock(cfg.d_model, cfg.mega_z_dim, cfg.mega_hidden, cfg.mega_ema_dim, cfg.seq_len, cfg.mega_chunk,
                     ads=ads, ads_bias=cfg.ads_bias)
