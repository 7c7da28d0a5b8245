"""Square Attack (Andriushchenko et al., 2020): score-based random search, no gradients, via torchattacks."""
from __future__ import annotations

from ._wrapped import TorchattacksAttack
from .base import MAX_QUERIES, check_number, check_restarts


class Square(TorchattacksAttack):
    """Random square-shaped updates accepted when the margin loss drops; a gradient-free sanity check.

    The square-size schedule is rescaled to `queries` (AutoAttack's fixed schedule assumes 5000 + 5000 queries).
    """

    name = "square"
    randomised = True
    summary_text = "Square Attack: gradient-free random search on the margin (torchattacks.Square)."

    def __init__(self, model, eps: float | None = None, norm: str = "Linf", queries: int = 5000, restarts: int = 1,
                 p_init: float = 0.8, seed: int | None = 0, batch_size: int = 128):
        super().__init__(model, eps=eps, norm=norm, seed=seed, batch_size=batch_size)
        self.queries = check_number("queries", queries, lo=1, hi=MAX_QUERIES, integer=True, cap="MAX_QUERIES")
        self.restarts = check_restarts(restarts)
        self.p_init = check_number("p_init", p_init, hi=1.0, positive=True)

    def _cost(self, n, n_classes):
        return (n + n * self.restarts * (self.queries + 2), 0,
                f"Square: up to {self.queries} queries x {self.restarts} restart(s) per image, forward only "
                "(images stop querying once broken)")

    def _build(self, model, goal, n_classes, ctx):
        import torchattacks  # imported on first use: it pulls in scipy.stats, a second of app start-up
        return torchattacks.Square(model, norm=self.norm, eps=self.eps, n_queries=self.queries,
                                   n_restarts=self.restarts, p_init=self.p_init, loss="margin", resc_schedule=True,
                                   seed=ctx.seed)
