"""PGD (Madry et al., 2018) on the cross-entropy, Linf or L2, with random start, restarts and a targeted mode."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._runtime import Cancelled, RunContext, ce_loss_sum
from .base import Attack, AttackParamError, check_number, check_restarts, check_steps

MAX_L2_STEP = math.sqrt(4 * 128 * 128)  # the L2 diameter of the largest allowed image


class PGD(Attack):
    """Projected gradient ascent on CE from a uniform random point of the eps-ball.

    Every gradient is taken at the iterate itself, inside the ball (the paper's reference code added its
    random start twice, so its gradients came from up to 2 eps away). Each image returns its first
    successful iterate, otherwise the last one (`early_stop=False`, the training adversary of Madry et al.:
    every image takes every step and returns the last iterate); with restarts, images still unbroken are attacked again
    from a new random start and keep the restart with the highest final loss. `step_size` defaults to
    2.5 * eps / steps (Madry et al.), which is 2/255 for eps = 8/255 and 10 steps.
    """

    name = "pgd"
    supports_targeted = True
    randomised = True
    owns_loop = True
    uses_global_rng = False  # random starts come from the run's own generator
    summary_text = "Projected gradient descent on the cross-entropy (own implementation)."

    def __init__(self, model, eps: float | None = None, norm: str = "Linf", steps: int = 10,
                 step_size: float | None = None, restarts: int = 1, random_start: bool = True,
                 targeted: bool = False, target: int | None = None, seed: int | None = 0, batch_size: int = 128,
                 early_stop: bool = True):
        super().__init__(model, eps=eps, norm=norm, seed=seed, batch_size=batch_size, targeted=targeted,
                         target=target)
        self.steps = check_steps(steps, lo=0)
        self.restarts = check_restarts(restarts)
        if step_size is None:
            step_size = 2.5 * self.eps / max(self.steps, 1)
        else:
            limit = 1.0 if norm == "Linf" else MAX_L2_STEP
            step_size = check_number("step_size", step_size, hi=limit, positive=True)
        self.step_size = float(step_size)
        if not isinstance(random_start, bool):
            raise AttackParamError(f"random_start must be True or False, got {random_start!r}")
        self.random_start = random_start
        self.randomised = random_start
        if not isinstance(early_stop, bool):
            raise AttackParamError(f"early_stop must be True or False, got {early_stop!r}")
        self.early_stop = early_stop

    def _cost(self, n: int, n_classes: int) -> tuple[int, int, str]:
        runs = n * self.restarts
        extra = runs if self.restarts > 1 else 0
        text = f"PGD: {self.steps} steps x {self.restarts} restart(s), 1 forward+backward per step and image"
        if extra:
            text += ", +1 forward per restart and image to compare restarts (later restarts only on unbroken images)"
        return runs * self.steps + extra, runs * self.steps, text

    def _progress_total(self, n: int, n_classes: int) -> int:
        return -(-n // self.batch_size) * self.restarts * max(self.steps, 1)

    def _attack(self, x: torch.Tensor, y: torch.Tensor, goal: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        if self.restarts == 1:
            return self._single_run(x, y, goal, ctx, 0, None)[0]
        best = x.clone()  # (B, C, S, S)
        best_loss = torch.full((len(x),), float("-inf"), device=x.device)  # (B,)
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)  # (B,)
        for restart in range(self.restarts):
            todo = (~found).nonzero().squeeze(1)  # (b,)
            if len(todo) == 0 or ctx.cancel_requested():
                break
            adv, hit = self._single_run(x[todo], y[todo], goal[todo], ctx, restart, todo)
            if ctx.cancelled:
                if restart == 0:
                    best[todo] = adv
                break
            try:
                with torch.no_grad():
                    logits = ctx.model(adv)  # (b, classes)
            except Cancelled:
                ctx.cancelled = True
                if restart == 0:
                    best[todo] = adv
                break
            ctx.record(restart, self.steps, logits, y[todo], todo)
            loss = F.cross_entropy(logits, goal[todo], reduction="none")  # (b,)
            pred = logits.argmax(dim=1)
            if self.targeted:
                loss, hit = -loss, hit | pred.eq(goal[todo])
            else:
                hit = hit | pred.ne(goal[todo])
            better = hit | (loss > best_loss[todo])
            best[todo[better]] = adv[better]
            best_loss[todo[better]] = loss[better]
            found[todo[hit]] = True
        return best

    def _start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm == "Linf":
            noise = torch.rand(x.shape, generator=generator, device=x.device) * (2 * self.eps) - self.eps
            return (x + noise).clamp(0.0, 1.0)  # (B, C, S, S)
        direction = torch.randn(x.shape, generator=generator, device=x.device)  # (B, C, S, S)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        dim = direction[0].numel()
        radius = self.eps * torch.rand(len(x), generator=generator, device=x.device) ** (1.0 / dim)  # uniform in ball
        return (x + direction * radius.view(-1, *([1] * (x.dim() - 1)))).clamp(0.0, 1.0)

    def _single_run(self, x, y, goal, ctx: RunContext, restart: int, index):
        """One PGD trajectory; returns (per-image first successful iterate or last iterate, success mask).

        An image leaves the batch at its first successful iterate (the point it returns), so later steps only
        spend passes on images still unbroken; the result is the same as stepping every image to the end."""
        view = (-1,) + (1,) * (x.dim() - 1)
        alpha, eps, targeted = self.step_size, self.eps, self.targeted
        if self.norm == "Linf":
            lower, upper = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)  # (B, C, S, S)
        x_adv = self._start(x, ctx.generator)  # (B, C, S, S)
        hit = torch.zeros(len(x), dtype=torch.bool, device=x.device)  # (B,)
        active = torch.arange(len(x), device=x.device)  # (b,) rows still unbroken
        where = f"pgd: batch from image {ctx.offset + 1}, restart {restart + 1}/{self.restarts}"
        for step in range(self.steps):
            if ctx.cancel_requested():
                break
            if len(active) == 0:
                ctx.advance(self.steps - step, f"{where}: every image fooled after {step} step(s)")
                break
            point = x_adv[active].requires_grad_(True)  # (b, C, S, S)
            try:
                logits = ctx.model(point)  # (b, classes)
            except Cancelled:
                ctx.cancelled = True
                break
            goal_a = goal[active]
            (grad,) = torch.autograd.grad(ce_loss_sum(logits, goal_a, targeted), point)  # (b, C, S, S)
            ctx.model.count_backward(len(active))
            point, logits = point.detach(), logits.detach()
            if step == 0:
                self._check_gradient(grad, ctx)
            if ctx.recorder is not None:
                ctx.record(restart, step, logits, y[active], active if index is None else index[active])
            if self.early_stop:  # otherwise success is judged at the returned last iterate only
                pred = logits.argmax(dim=1)
                fooled = pred.eq(goal_a) if targeted else pred.ne(goal_a)  # (b,)
                hit[active[fooled]] = True  # these rows of x_adv stay at their first successful iterate
                keep = ~fooled
                point, grad, active = point[keep], grad[keep], active[keep]
            if self.norm == "Linf":
                point.add_(grad.sign_(), alpha=alpha).clamp_(min=lower[active], max=upper[active])
            else:
                x_a = x[active]  # (b, C, S, S)
                grad_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)  # (b, 1, 1, 1)
                delta = point.add_(grad.div_(grad_norm), alpha=alpha).sub_(x_a)  # (b, C, S, S)
                delta_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
                point = delta.mul_((eps / delta_norm).clamp(max=1.0)).add_(x_a).clamp_(0.0, 1.0)
            x_adv[active] = point
            ctx.advance(1, f"{where}, step {step + 1}/{self.steps}")
        return x_adv.detach(), hit

    @staticmethod
    def _check_gradient(grad: torch.Tensor, ctx: RunContext) -> None:
        magnitude = grad.flatten(1).abs().amax(dim=1)  # (B,)
        if not bool(torch.isfinite(magnitude).all()):
            ctx.flag("non-finite input gradients at the first step: the model's backward pass is unstable")
        elif bool((magnitude == 0).any()):
            ctx.flag("some images have an all-zero input gradient at the first step (gradient masking?)")

