"""Training methods: standard, PGD-AT (Madry), TRADES, FreeAT and YOPO, each a loss step on one minibatch."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .attacks._runtime import project
from .attacks.base import MAX_BATCH
from .attacks.pgd import PGD
from .method_names import METHODS


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
    return project(x_adv, x, eps, "Linf")  # the attacks' own projection: eps-ball, then [0, 1]


def _input_grad(model: nn.Module, x: torch.Tensor, loss_fn) -> torch.Tensor:
    """Gradient of loss_fn(model(x)) with respect to x only."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model(x)), x)
    return grad


def pgd_linf(model: nn.Module, x, y, tm: ThreatModel, generator: torch.Generator,
             early_stop: bool = False) -> torch.Tensor:
    """PGD-k with a uniform random start, run by the evaluation attack (`attacks.PGD`) with the model frozen.
    Training's default, `early_stop=False`, takes every step for every image and keeps the last iterate (Madry et
    al.); `early_stop=True` is the reported PGD (an image keeps its first successful iterate). The attack's seed
    is drawn from `generator`, so a run stays reproducible and resumable."""
    if tm.eps == 0:  # the first steps of an eps warm-up
        return x.detach().clone()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    attack = PGD(distributed.unwrap(model), eps=tm.eps, steps=tm.steps, step_size=tm.step_size, seed=seed,
                 batch_size=min(len(x), MAX_BATCH), early_stop=early_stop)
    return attack.run(x, y).adv


def trades_adversary(model: nn.Module, x, tm: ThreatModel, generator: torch.Generator) -> torch.Tensor:
    """TRADES inner maximisation of KL(f(x) || f(x_adv)) from x + 0.001 N(0, 1) (Zhang et al. 2019): `kl_div(log q,
    p)` is sum p (log p - log q), the clean distribution p first."""
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
        # KL(f(x) || f(x_adv)), differentiated through both distributions as in Zhang et al.'s code
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        loss = F.cross_entropy(logits, y) + self.tm.beta * robust
        self._update(loss)
        return loss.item(), logits_adv.detach(), x_adv

    def _freeat(self, x, y):
        """Shafahi et al. 2019: m replays of the minibatch; each one an optimizer step and an FGSM step of size eps
        on a perturbation carried over between minibatches (eps taken from the threat model, not hard-coded)."""
        eps = self.tm.eps
        delta = self._carried_delta(x)  # (B, C, S, S)
        loss_value, logits = 0.0, None
        for _ in range(self.tm.replays):
            delta.requires_grad_(True)
            logits = self.model((x + delta).clamp(0.0, 1.0))
            loss = F.cross_entropy(logits, y)
            self._update(loss)  # one backward gives both the parameter and the input gradient
            delta = (delta.detach() + eps * delta.grad.sign()).clamp(-eps, eps)
            loss_value = loss.item()
        self._carry_delta(delta)
        return loss_value, logits.detach(), (x + delta).clamp(0.0, 1.0)

    def _carried_delta(self, x: torch.Tensor) -> torch.Tensor:
        """The carried perturbation's first len(x) rows, as the reference code slices its global noise buffer: a
        smaller last batch uses what fits and leaves the other rows for the next epoch; a batch larger than any
        before extends the buffer with zeros. Clipped to the current eps (which ramps during warm-up)."""
        buffer = self.free_delta
        if buffer is None:
            buffer = torch.zeros_like(x)
        elif buffer.shape[1:] != x.shape[1:]:
            raise ValueError(f"FreeAT carries its perturbation between minibatches of one image shape: got "
                             f"{tuple(x.shape[1:])} after {tuple(buffer.shape[1:])}")
        elif len(buffer) < len(x):
            buffer = torch.cat([buffer, torch.zeros_like(x[len(buffer):])])  # (B, C, S, S)
        self.free_delta = buffer
        return buffer[: len(x)].clamp(-self.tm.eps, self.tm.eps)  # (B, C, S, S)

    def _carry_delta(self, delta: torch.Tensor) -> None:
        buffer = self.free_delta.clone()
        buffer[: len(delta)] = delta
        self.free_delta = buffer

    def _yopo(self, x, y):
        """Zhang et al. 2019 (YOPO-m-n). Each of the m outer steps is one full forward and backward pass at x + eta:
        it accumulates the gradient of every layer after the first and gives p, the loss gradient at the first
        layer's output. Then n sign steps move eta up the first-layer objective p . f0(x + eta) with p frozen, and
        the first layer's gradient is that of p . f0(x + eta) at the final eta (the reference code's layer-one
        update), not the full pass's. One optimizer step per minibatch. Starts from a uniform random eta (the
        paper's code used a constant +eps)."""
        tm = self.tm
        first_layer = [p for p in self.model.embed.parameters() if p.requires_grad]
        noise = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        eta = _project(x + (2 * noise - 1) * tm.eps, x, tm.eps) - x  # (B, C, S, S)
        self.optimizer.zero_grad(set_to_none=True)
        first_grads = [torch.zeros_like(p) for p in first_layer]
        loss_value, logits = 0.0, None
        for _ in range(tm.yopo_outer):
            logits, first_out = self._forward_keeping_first_layer(x + eta)
            loss = F.cross_entropy(logits, y)
            (loss / tm.yopo_outer).backward()  # accumulates the other layers' gradients
            loss_value = loss.item()
            p = first_out.grad.detach()  # (B, L, H)
            for _ in range(tm.yopo_inner):
                eta_var = eta.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(self._first_layer_objective(x + eta_var, p), eta_var)
                eta = _project(x + eta + tm.step_size * g.sign(), x, tm.eps) - x
            grads = torch.autograd.grad(self._first_layer_objective(x + eta, p), first_layer)
            for total, g in zip(first_grads, grads):
                total += g
        for param, g in zip(first_layer, distributed.average_gradients(first_grads)):
            param.grad = g  # replaces what the full passes left there
        self.optimizer.step()
        return loss_value, logits.detach(), x + eta

    def _forward_keeping_first_layer(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the first layer's output, which keeps its gradient after backward."""
        captured: list[torch.Tensor] = []

        def keep(_module, _inputs, output):
            output.retain_grad()
            captured.append(output)

        handle = self.model.embed.register_forward_hook(keep)
        try:
            logits = self.model(x)  # (B, classes)
        finally:
            handle.remove()
        return logits, captured[0]

    def _first_layer_objective(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return (self.model.tokens(x) * p).sum()  # p-weighted first-layer output, (B, L, H) summed
