"""Shared runner for attacks implemented by torchattacks: one library attack object per batch, on the counted model."""
from __future__ import annotations

import torch

from ._runtime import RunContext
from .base import MAX_TARGETS, Attack, check_number, check_restarts, check_steps


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


class RestartedAttack(TorchattacksAttack):
    """A torchattacks attack run for `steps` iterations from each of `restarts` starts (AutoAttack's 100 by default)."""

    def __init__(self, model, eps: float | None = None, norm: str = "Linf", steps: int = 100, restarts: int = 1,
                 seed: int | None = 0, batch_size: int = 128):
        super().__init__(model, eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.steps = check_steps(steps)
        self.restarts = check_restarts(restarts)


class MultiTargetedAttack(RestartedAttack):
    """A restarted attack run against each of the `n_targets` most likely wrong classes in turn."""

    def __init__(self, model, eps: float | None = None, norm: str = "Linf", steps: int = 100, restarts: int = 1,
                 n_targets: int = 9, seed: int | None = 0, batch_size: int = 128):
        super().__init__(model, eps=eps, norm=norm, steps=steps, restarts=restarts, seed=seed, batch_size=batch_size)
        self.n_targets = check_number("n_targets", n_targets, lo=1, hi=MAX_TARGETS, integer=True, cap="MAX_TARGETS")

    def target_count(self, n_classes: int) -> int:
        return min(self.n_targets, n_classes - 1)

    def _per_target_cost(self, n: int, n_classes: int, forwards: int, backwards: int, one_run: str):
        """`_cost` when each image runs `restarts` times per target class, each run `forwards` + `backwards` passes."""
        runs = n * self.restarts * self.target_count(n_classes)
        return (n + runs * forwards, runs * backwards,
                f"{self.name.upper()}: {self.target_count(n_classes)} target class(es) x {self.restarts} restart(s) x "
                f"{one_run} (each target only on images still unbroken)")

    def usable_targets(self, n_classes: int, ctx: RunContext) -> int:
        """At most n_classes - 1 target classes exist; say so when fewer than requested are used."""
        if self.n_targets > n_classes - 1:
            ctx.flag(f"n_targets={self.n_targets} reduced to {n_classes - 1}: the model has only {n_classes} classes")
        return self.target_count(n_classes)

