"""Shared by the model-family tests: a seeded small model and the relative error that the tolerances bound."""
from __future__ import annotations

import torch

from ssm_models import create_model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, computed in float64 so a float32 comparison is not rounded again."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def seeded_model(arch: str, small: dict, dtype=torch.float32, **overrides) -> torch.nn.Module:
    """The same weights on every call: seed 0, the test file's small config, then `overrides`."""
    torch.manual_seed(0)
    return create_model(arch, **{**small, **overrides}).to(dtype)


def assert_gradients_reach_every_parameter(model: torch.nn.Module, logits: torch.Tensor, x: torch.Tensor) -> None:
    """Backpropagate a scalar of the logits: the input and every parameter get a finite, non-zero gradient."""
    logits.logsumexp(-1).sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
