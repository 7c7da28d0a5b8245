"""FAB-T (Croce & Hein, 2020): targeted minimal-perturbation attack through torchattacks.FAB (multi-targeted)."""
from __future__ import annotations

from ._wrapped import TorchattacksAttack, check_targets, usable_targets
from .base import MAX_RESTARTS, MAX_STEPS, check_number


class FABT(TorchattacksAttack):
    """Fast adaptive boundary attack against the `n_targets` most likely wrong classes, 100 iterations each.

    FAB looks for the smallest perturbation; points it breaks only beyond eps count as robust.
    """

    name = "fab-t"
    randomised = True
    summary_text = "Targeted fast adaptive boundary attack (torchattacks.FAB, multi-targeted)."

    def __init__(self, model, eps: float | None = None, norm: str = "Linf", steps: int = 100, restarts: int = 1,
                 n_targets: int = 9, seed: int | None = 0, batch_size: int = 128):
        super().__init__(model, eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.steps = check_number("steps", steps, lo=1, hi=MAX_STEPS, integer=True, cap="MAX_STEPS")
        self.restarts = check_number("restarts", restarts, lo=1, hi=MAX_RESTARTS, integer=True, cap="MAX_RESTARTS")
        self.n_targets = check_targets(n_targets)

    def _cost(self, n, n_classes):
        runs = n * self.restarts * min(self.n_targets, n_classes - 1)
        return (n + runs * (2 * self.steps + 3), runs * self.steps,
                f"FAB-T: {min(self.n_targets, n_classes - 1)} target class(es) x {self.restarts} restart(s) x "
                f"{self.steps} steps of 1 forward+backward and 1 checking forward per image, +3 forwards per run "
                "(each target only on images still unbroken)")

    def _build(self, model, goal, n_classes, ctx):
        import torchattacks  # imported on first use: it pulls in scipy.stats, a second of app start-up
        targets = usable_targets(self.n_targets, n_classes, ctx)
        return torchattacks.FAB(model, norm=self.norm, eps=self.eps, steps=self.steps, n_restarts=self.restarts,
                                alpha_max=0.1, eta=1.05, beta=0.9, seed=ctx.seed, multi_targeted=True,
                                n_classes=targets + 1)
