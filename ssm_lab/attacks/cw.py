"""Carlini-Wagner L2 (2017) through torchattacks.CW, then projected onto the L2 eps-ball."""
from __future__ import annotations

from ._wrapped import TorchattacksAttack
from .base import check_number, check_steps


class CWL2(TorchattacksAttack):
    """Adam in tanh space on ||delta||^2 + c * max(margin, -kappa); keeps each image's smallest successful delta.

    CW is a minimum-norm attack: a delta larger than eps is scaled back onto the ball, where it may fail.
    torchattacks stops early when the objective stops decreasing. Deterministic; `seed` has no effect.
    """

    name = "cw-l2"
    norms = ("L2",)
    supports_targeted = True
    summary_text = "Carlini-Wagner L2 (torchattacks.CW), projected onto the L2 eps-ball."

    def __init__(self, model, eps: float | None = None, norm: str = "L2", steps: int = 100, c: float = 1.0,
                 kappa: float = 0.0, lr: float = 0.01, targeted: bool = False, target: int | None = None,
                 seed: int | None = 0, batch_size: int = 128):
        super().__init__(model, eps=eps, norm=norm, seed=seed, batch_size=batch_size, targeted=targeted,
                         target=target)
        self.steps = check_steps(steps)
        self.c = check_number("c", c, hi=1e4, positive=True)
        self.kappa = check_number("kappa", kappa, lo=0, hi=1e3)
        self.lr = check_number("lr", lr, hi=10.0, positive=True)

    def _cost(self, n, n_classes):
        return n * self.steps, n * self.steps, f"CW-L2: up to {self.steps} forward+backward per image (stops early)"

    def _build(self, model, goal, n_classes, ctx):
        import torchattacks  # imported on first use: it pulls in scipy.stats, a second of app start-up
        atk = torchattacks.CW(model, c=self.c, kappa=self.kappa, steps=self.steps, lr=self.lr)
        if self.targeted:
            atk.set_mode_targeted_by_function(lambda images, labels: goal, quiet=True)
        return atk
