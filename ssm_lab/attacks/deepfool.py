"""DeepFool (Moosavi-Dezfooli et al., 2016) through torchattacks, then projected onto the L2 eps-ball."""
from __future__ import annotations

from ._wrapped import TorchattacksAttack
from .base import check_number, check_steps


class DeepFool(TorchattacksAttack):
    """Steps to the nearest linearised decision boundary until the label flips.

    Minimum-norm: a result beyond eps is scaled back onto the ball. torchattacks builds the full Jacobian
    (one backward per class) image by image, so it is slow for many classes. Deterministic.
    """

    name = "deepfool"
    norms = ("L2",)
    summary_text = "DeepFool (torchattacks.DeepFool), projected onto the L2 eps-ball."

    def __init__(self, model, eps: float | None = None, norm: str = "L2", steps: int = 50, overshoot: float = 0.02,
                 seed: int | None = 0, batch_size: int = 128):
        super().__init__(model, eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.steps = check_steps(steps)
        self.overshoot = check_number("overshoot", overshoot, lo=0, hi=1.0)

    def _cost(self, n, n_classes):
        return (n * self.steps, n * self.steps * n_classes,
                f"DeepFool: up to {self.steps} steps per image, each 1 forward and {n_classes} backward passes "
                "(one per class; stops when the label flips)")

    def _build(self, model, goal, n_classes, ctx):
        import torchattacks  # imported on first use: it pulls in scipy.stats, a second of app start-up
        return torchattacks.DeepFool(model, steps=self.steps, overshoot=self.overshoot)
