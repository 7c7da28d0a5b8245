"""APGD-CE and APGD-T (Croce & Hein, 2020) through torchattacks, with AutoAttack's 100 iterations by default."""
from __future__ import annotations

from ._wrapped import MultiTargetedAttack, RestartedAttack


class APGDCE(RestartedAttack):
    """Auto-PGD on the cross-entropy: step size adapted from the loss progress, momentum 0.75.

    torchattacks defaults to 10 iterations; AutoAttack uses 100, which is the default here.
    """

    name = "apgd-ce"
    randomised = True
    summary_text = "Auto-PGD on cross-entropy (torchattacks.APGD, 100 iterations as in AutoAttack)."

    def _cost(self, n, n_classes):
        runs = n * self.restarts
        return (n + runs * (self.steps + 1), runs * (self.steps + 1),
                f"APGD-CE: 1 forward per image, then {self.restarts} restart(s) x ({self.steps} + 1) "
                "forward+backward per image (restarts only on unbroken images)")

    def _build(self, model, goal, n_classes, ctx):
        import torchattacks  # imported on first use: it pulls in scipy.stats, a second of app start-up
        return torchattacks.APGD(model, norm=self.norm, eps=self.eps, steps=self.steps, n_restarts=self.restarts,
                                 seed=ctx.seed, loss="ce", eot_iter=1, rho=0.75)


class APGDT(MultiTargetedAttack):
    """Auto-PGD on the targeted DLR loss against the `n_targets` most likely wrong classes in turn."""

    name = "apgd-t"
    randomised = True
    summary_text = "Targeted Auto-PGD on the DLR loss over the top wrong classes (torchattacks.APGDT)."

    def _cost(self, n, n_classes):
        return self._per_target_cost(n, n_classes, self.steps + 2, self.steps + 1,
                                     f"({self.steps} + 1) forward+backward per image, +1 forward per target to rank "
                                     "the classes")

    def _build(self, model, goal, n_classes, ctx):
        import torchattacks
        targets = self.usable_targets(n_classes, ctx)
        return torchattacks.APGDT(model, norm=self.norm, eps=self.eps, steps=self.steps, n_restarts=self.restarts,
                                  seed=ctx.seed, eot_iter=1, rho=0.75, n_classes=targets + 1)
