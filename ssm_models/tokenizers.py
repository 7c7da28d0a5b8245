"""Image -> token sequence: row-major pixels, conv patches, or the paper's channel-interleaving view."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelTokens(nn.Module):
    """One token per pixel in row-major order, carrying that pixel's C channel values."""

    def __init__(self, in_channels: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, L, C)
        return self.proj(tokens)  # (B, L, H)

    def token_map(self, values: torch.Tensor, image_size: int, in_channels: int) -> torch.Tensor:
        """Per-token values (B, L) -> per-pixel map (B, S, S)."""
        return values.reshape(values.shape[0], image_size, image_size)  # (B, S, S)


class PaperTokens(PixelTokens):
    """The reference code's `x.view(B, H*W, C)` on NCHW without a permute: token t holds flat CHW
    elements t*C .. t*C+C-1, so channels and pixels interleave. Needed to run its checkpoints."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.reshape(b, h * w, c)  # (B, L, C)
        return self.proj(tokens)  # (B, L, H)

    def token_map(self, values: torch.Tensor, image_size: int, in_channels: int) -> torch.Tensor:
        b, length = values.shape
        per_element = values.repeat_interleave(in_channels, dim=1)  # (B, L*C) in CHW order
        per_element = per_element.reshape(b, in_channels, image_size, image_size)  # (B, C, S, S)
        return per_element.mean(dim=1)  # (B, S, S)


class PatchTokens(nn.Module):
    """Non-overlapping p x p patches embedded by a strided convolution, row-major."""

    def __init__(self, in_channels: int, d_model: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The strided convolution as one matrix product over flattened patches: several times faster on a
        CPU than the convolution primitive, forward and backward (same weights, same result)."""
        b, c = x.shape[:2]
        p, g = self.patch_size, x.shape[-1] // self.patch_size
        patches = x[..., : g * p, : g * p].reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)  # (B, g, g, C, p, p)
        weight = self.proj.weight.reshape(self.proj.out_channels, -1)  # (H, C p p)
        return F.linear(patches.reshape(b, g * g, c * p * p), weight, self.proj.bias)  # (B, L, H)

    def forward_conv(self, x: torch.Tensor) -> torch.Tensor:
        """Reference path: the convolution itself."""
        z = self.proj(x)  # (B, H, S/p, S/p)
        return z.flatten(2).transpose(1, 2)  # (B, L, H)

    def token_map(self, values: torch.Tensor, image_size: int, in_channels: int) -> torch.Tensor:
        g = image_size // self.patch_size
        grid = values.reshape(values.shape[0], 1, g, g)  # (B, 1, g, g)
        return F.interpolate(grid, scale_factor=self.patch_size, mode="nearest")[:, 0]  # (B, S, S)


def build_tokenizer(kind: str, in_channels: int, d_model: int, patch_size: int) -> nn.Module:
    if kind == "pixel":
        return PixelTokens(in_channels, d_model)
    if kind == "paper":
        return PaperTokens(in_channels, d_model)
    if kind == "patch":
        return PatchTokens(in_channels, d_model, patch_size)
    raise ValueError(f"unknown tokenizer {kind!r}")
