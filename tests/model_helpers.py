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


def scan_inputs(batch, length, inner, state, dtype):
    """Seeded selective-scan inputs x, dt, A, B, C, D, each requiring grad."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, length, inner, dtype=dtype, generator=g)
    # dt spans gentle to strong decay, so some states forget within a few steps
    dt = torch.nn.functional.softplus(2 * torch.randn(batch, length, inner, dtype=dtype, generator=g) - 2)
    A = -torch.exp(torch.randn(inner, state, dtype=dtype, generator=g))
    B = torch.randn(batch, length, state, dtype=dtype, generator=g)
    C = torch.randn(batch, length, state, dtype=dtype, generator=g)
    D = torch.randn(inner, dtype=dtype, generator=g)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D)]
