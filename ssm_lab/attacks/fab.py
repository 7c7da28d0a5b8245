"""FAB-T (Croce & Hein, 2020): targeted minimal-perturbation attack through torchattacks.FAB (multi-targeted)."""
from __future__ import annotations

from ._wrapped import MultiTargetedAttack


class FABT(MultiTargetedAttack):
    """Fast adaptive boundary attack against the `n_targets` most likely wrong classes, 100 iterations each.

    FAB looks for the smallest perturbation; points it breaks only beyond eps count as robust.
    """

    name = "fab-t"
    randomised = True
    summary_text = "Targeted fast adaptive boundary attack (torchattacks.FAB, multi-targeted)."

    def _cost(self, n, n_classes):
        return self._per_target_cost(n, n_classes, 2 * self.steps + 3, self.steps,
                                     f"{self.steps} steps of 1 forward+backward and 1 checking forward per image, "
                                     "+3 forwards per run")

    def _build(self, model, goal, n_classes, ctx):
        import torchattacks  # imported on first use: it pulls in scipy.stats, a second of app start-up
        targets = self.usable_targets(n_classes, ctx)
        return torchattacks.FAB(model, norm=self.norm, eps=self.eps, steps=self.steps, n_restarts=self.restarts,
                                alpha_max=0.1, eta=1.05, beta=0.9, seed=ctx.seed, multi_targeted=True,
                                n_classes=targets + 1)
