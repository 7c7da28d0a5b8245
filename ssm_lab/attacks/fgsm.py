"""FGSM (Goodfellow et al., 2015): one signed-gradient step of size eps; with norm='L2' the normalised-gradient FGM."""
from __future__ import annotations

import torch

from ._runtime import RunContext, ce_loss_sum
from .base import Attack


class FGSM(Attack):
    """x + eps * sign(grad CE) (Linf) or x + eps * grad / ||grad|| (L2); targeted: descend CE of the target.

    Deterministic: `seed` is accepted for a uniform interface and has no effect.
    """

    name = "fgsm"
    supports_targeted = True
    owns_loop = True
    uses_global_rng = False
    summary_text = "Fast gradient sign method: a single gradient step of size eps."

    def __init__(self, model, eps: float | None = None, norm: str = "Linf", targeted: bool = False,
                 target: int | None = None, seed: int | None = 0, batch_size: int = 128):
        super().__init__(model, eps=eps, norm=norm, seed=seed, batch_size=batch_size, targeted=targeted,
                         target=target)

    def _cost(self, n: int, n_classes: int) -> tuple[int, int, str]:
        return n, n, "FGSM: 1 forward+backward per image"

    def _progress_total(self, n: int, n_classes: int) -> int:
        return -(-n // self.batch_size)

    def _attack(self, x: torch.Tensor, y: torch.Tensor, goal: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        x_req = x.clone().requires_grad_(True)  # (B, C, S, S)
        logits = ctx.model(x_req)  # (B, classes)
        (grad,) = torch.autograd.grad(ce_loss_sum(logits, goal, self.targeted), x_req)
        ctx.model.count_backward(len(x))
        ctx.record(0, 0, logits, y)
        if self.norm == "Linf":
            adv = x + self.eps * grad.sign()
        else:
            norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))  # (B, 1, 1, 1)
            adv = x + self.eps * grad / norms
        if bool((grad.flatten(1).abs().amax(dim=1) == 0).any()):
            ctx.flag("some images have an all-zero input gradient: FGSM cannot move them")
        ctx.advance(1, f"fgsm: images {ctx.offset + 1}-{ctx.offset + len(x)}")
        return adv.clamp(0.0, 1.0)
