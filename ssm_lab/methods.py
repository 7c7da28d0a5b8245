"""Training methods: standard, PGD-AT (Madry), TRADES, FreeAT and YOPO, each a loss step on one minibatch."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("st", "pgd-at", "trades", "freeat", "yopo")


@dataclass
class ThreatModel:
    eps: float
    step_size: float
    steps: int = 10
    beta: float = 6.0  # TRADES
    replays: int = 4  # FreeAT m
    yopo_outer: int = 5  # YOPO m
    yopo_inner: int = 3  # YOPO n


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def _input_grad(model: nn.Module, x: torch.Tensor, loss_fn) -> torch.Tensor:
    """Gradient of loss_fn(model(x)) with respect to x only."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model(x)), x)
    return grad


def pgd_linf(model: nn.Module, x, y, tm: ThreatModel, generator: torch.Generator) -> torch.Tensor:
    """PGD-k with a uniform random start; the gradient is always taken at the point that is kept.
    Runs with the model frozen (eval, no parameter gradients), so time-invariant kernels are computed once."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = _project(x + (2 * noise - 1) * tm.eps, x, tm.eps)
    with model.frozen():
        for _ in range(tm.steps):
            grad = _input_grad(model, x_adv, lambda logits: F.cross_entropy(logits, y))
            x_adv = _project(x_adv + tm.step_size * grad.sign(), x, tm.eps)
    return x_adv.detach()


def trades_adversary(model: nn.Module, x, tm: ThreatModel, generator: torch.Generator) -> torch.Tensor:
    """TRADES inner maximisation of KL(f(x_adv) || f(x)) from x + 0.001 N(0, 1) (Zhang et al. 2019)."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)  # (B, classes)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = (x + 0.001 * noise).clamp(0.0, 1.0)

    def kl(logits):
        return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="sum")

    for _ in range(tm.steps):
        grad = _input_grad(model, x_adv, kl)
        x_adv = _project(x_adv + tm.step_size * grad.sign(), x, tm.eps)
    return x_adv.detach()


class MethodStep:
    """Runs one training step of a method on a minibatch; returns (loss, logits on the training input)."""

    def __init__(self, method: str, model: nn.Module, optimizer: torch.optim.Optimizer, tm: ThreatModel, seed: int):
        if method not in METHODS:
            raise ValueError(f"unknown training method {method!r}; choose from {', '.join(METHODS)}")
        self.method, self.model, self.optimizer, self.tm = method, model, optimizer, tm
        self.generator = torch.Generator().manual_seed(seed)
        self.free_delta: torch.Tensor | None = None  # FreeAT's perturbation persists across minibatches

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Returns (loss value, logits, the inputs the model was trained on)."""
        return getattr(self, "_" + self.method.replace("-", "_"))(x, y)

    def _update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def _st(self, x, y):
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self._update(loss)
        return loss.item(), logits.detach(), x

    def _pgd_at(self, x, y):
        x_adv = pgd_linf(self.model, x, y, self.tm, self.generator)
        logits = self.model(x_adv)
        loss = F.cross_entropy(logits, y)
        self._update(loss)
        return loss.item(), logits.detach(), x_adv

    def _trades(self, x, y):
        with self.model.frozen():
            x_adv = trades_adversary(self.model, x, self.tm, self.generator)
        logits = self.model(x)
        logits_adv = self.model(x_adv)
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        loss = F.cross_entropy(logits, y) + self.tm.beta * robust
        self._update(loss)
        return loss.item(), logits_adv.detach(), x_adv

    def _freeat(self, x, y):
        """Shafahi et al. 2019: m replays of the minibatch; each one an optimizer step and an FGSM step of size eps
        on a perturbation carried over between minibatches (eps taken from the threat model, not hard-coded)."""
        if self.free_delta is None or self.free_delta.shape != x.shape:
            self.free_delta = torch.zeros_like(x)
        loss_value, logits = 0.0, None
        for _ in range(self.tm.replays):
            delta = self.free_delta.clone().requires_grad_(True)
            x_adv = (x + delta).clamp(0.0, 1.0)
            logits = self.model(x_adv)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # one backward gives both the parameter and the input gradient
            self.optimizer.step()
            step = self.tm.eps * delta.grad.sign()
            self.free_delta = ((x + (delta.detach() + step).clamp(-self.tm.eps, self.tm.eps)).clamp(0, 1) - x)
            loss_value = loss.item()
        return loss_value, logits.detach(), (x + self.free_delta).clamp(0, 1)

    def _yopo(self, x, y):
        """Zhang et al. 2019 (YOPO-m-n): the adversary is updated n times per outer step using only the first
        layer (the embedding), with the gradient p at the embedding output frozen; parameter gradients are
        accumulated over the m outer steps. Starts from a random perturbation (the reference used a constant +eps)."""
        embed = self.model.embed
        tm = self.tm
        noise = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        eta = (2 * noise - 1) * tm.eps
        eta = _project(x + eta, x, tm.eps) - x
        self.optimizer.zero_grad(set_to_none=True)
        captured: dict[str, torch.Tensor] = {}

        def keep_output(_module, _inputs, output):
            output.retain_grad()
            captured["embed"] = output

        loss_value, logits = 0.0, None
        for _ in range(tm.yopo_outer):
            handle = embed.register_forward_hook(keep_output)
            try:
                logits = self.model((x + eta).clamp(0, 1))
            finally:
                handle.remove()
            loss = F.cross_entropy(logits, y)
            (loss / tm.yopo_outer).backward()  # accumulates parameter gradients
            loss_value = loss.item()
            p = captured["embed"].grad.detach()  # (B, L, H) gradient at the first layer's output
            for _ in range(tm.yopo_inner):
                eta_var = eta.clone().requires_grad_(True)
                hamiltonian = (self.model.tokens((x + eta_var).clamp(0, 1)) * p).sum()
                (g,) = torch.autograd.grad(hamiltonian, eta_var)
                eta = _project(x + eta + tm.step_size * g.sign(), x, tm.eps) - x
        self.optimizer.step()
        return loss_value, logits.detach(), (x + eta).clamp(0, 1)
