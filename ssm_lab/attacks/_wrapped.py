"""Shared runner for attacks implemented by torchattacks: one library attack object per batch, on the counted model."""
from __future__ import annotations

import torch

from ._runtime import RunContext
from .base import MAX_TARGETS, Attack, check_number


class TorchattacksAttack(Attack):
    """Subclasses build the torchattacks object in `_build`; the base class still owns checks and projection.

    torchattacks seeds the global RNG inside its attacks; `run` restores the caller's RNG afterwards.
    Cancellation reaches into the library through the counted model, which raises at the next model call.
    """

    def _build(self, model, goal: torch.Tensor, n_classes: int, ctx: RunContext):
        raise NotImplementedError

    def _attack(self, x: torch.Tensor, y: torch.Tensor, goal: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        atk = self._build(ctx.model, goal, ctx.n_classes, ctx)
        atk.set_device(x.device)
        return atk(x, y).detach()


def check_targets(n_targets) -> int:
    return check_number("n_targets", n_targets, lo=1, hi=MAX_TARGETS, integer=True, cap="MAX_TARGETS")


def usable_targets(requested: int, n_classes: int, ctx: RunContext) -> int:
    """At most n_classes - 1 target classes exist; say so when fewer than requested are used."""
    if requested > n_classes - 1:
        ctx.flag(f"n_targets={requested} reduced to {n_classes - 1}: the model has only {n_classes} classes")
    return min(requested, n_classes - 1)
