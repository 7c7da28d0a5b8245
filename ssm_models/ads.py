"""Adaptive Scaling (AdS, Qi et al. 2024): an input-dependent gate act(W y) * y after the SSM."""
from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class AdaptiveScaling(nn.Module):
    """`act(W y) * y`; with `bias=True` the official-repo variant `act(W_s y + b_s) * y + act(W_b y + b_b)`."""

    def __init__(self, d_model: int, activation: str = "relu", bias: bool = False):
        super().__init__()
        self.act = _ACTIVATIONS[activation]()
        self.scale = nn.Linear(d_model, d_model, bias=bias)
        self.shift = nn.Linear(d_model, d_model, bias=True) if bias else None

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, L, H)
        out = self.act(self.scale(y)) * y  # (B, L, H)
        if self.shift is not None:
            out = out + self.act(self.shift(y))  # (B, L, H)
        return out
