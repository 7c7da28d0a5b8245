"""Small models and checks shared by the attack tests: an 8x8 MLP, seeded images, the eps-ball and box check."""
from __future__ import annotations

import torch
from torch import nn


def make_mlp(seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, classes))


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))  # (N, 1, 8, 8)


@torch.no_grad()
def labels_of(model, x):
    return model(x).argmax(1)


def within(adv, x, eps, norm, tol=1e-6) -> bool:
    delta = (adv.double() - x.double()).flatten(1)
    dist = delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)
    return bool((dist <= eps + tol).all()) and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
