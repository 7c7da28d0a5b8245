"""Run-time plumbing shared by every attack: counted model calls, cancellation, RNG isolation, projection, traces."""
from __future__ import annotations

import contextlib
import threading
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssm_models import frozen

Progress = Callable[[int, int, str], None]


class Cancelled(Exception):
    """Raised from inside a model call when the caller's cancel event is set; caught by the attack base class."""


class CountingModel(nn.Module):
    """Wraps the attacked model: counts image-level forward and backward passes and honours cancellation.

    A backward pass is counted by a hook on the logits, so it is seen whoever calls autograd (torchattacks,
    pyautoattack); our own loops turn the hook off (`hook_backward`) and call `count_backward`, which is
    cheaper. `armed=False` lets set-up and the final evaluation run whatever the cancel event says.
    """

    def __init__(self, model: nn.Module, cancel=None, on_call: Callable[[], None] | None = None):
        super().__init__()
        self.model = model
        self.training = bool(getattr(model, "training", False))  # torchattacks restores train() if this says so
        self.cancel = cancel
        self.on_call = on_call
        self.armed = True
        self.hook_backward = True
        self.calls = 0
        self.forward_images = 0
        self.backward_images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed and self.cancel is not None and self.cancel.is_set():
            raise Cancelled
        logits = self.model(x)  # (B, classes)
        n = x.shape[0]
        self.calls += 1
        self.forward_images += n
        if self.hook_backward and torch.is_tensor(logits) and logits.requires_grad:
            logits.register_hook(partial(self._count_backward, n))
        if self.on_call is not None:
            self.on_call()
        return logits

    def _count_backward(self, n: int, grad: torch.Tensor) -> None:
        self.backward_images += n

    def count_backward(self, n: int) -> None:
        self.backward_images += n


def attack_mode(model: nn.Module):
    """Eval mode with frozen parameters for the duration of an attack; restored afterwards (ssm_models.frozen,
    which also lets time-invariant kernels be computed once per attack)."""
    return frozen(model)


# torch has one global stream per process: attacks drawing from it take turns, or two requests served side by side
# would interleave their draws (and one's fork_rng exit would rewind the other's stream)
GLOBAL_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def preserve_global_rng(device: torch.device, seed: int, uses_global: bool = True):
    """Seed the global streams for libraries that draw from them, and give the caller its own back afterwards.

    torchattacks and pyautoattack call torch.manual_seed and torch.cuda.manual_seed inside their attacks.
    Attacks that draw only from their own generator (`uses_global=False`) leave the global streams alone.
    """
    if not uses_global:
        yield
        return
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


def project(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Into the eps-ball around x and the [0, 1] box; non-finite values fall back to x."""
    adv = torch.where(torch.isfinite(adv), adv, x)  # (B, C, S, S)
    if norm == "Linf":
        adv = torch.clamp(adv, min=x - eps, max=x + eps)
    else:
        # float64 so the rescaled radius does not overshoot eps by float32 rounding
        delta = (adv - x).double()  # (B, C, S, S)
        radius = delta.flatten(1).norm(dim=1).clamp_min(1e-30)  # (B,)
        factor = (eps / radius).clamp(max=1.0).view(-1, *([1] * (x.dim() - 1)))
        adv = (x.double() + delta * factor).float()
    return adv.clamp(0.0, 1.0)


def perturbation_norms(adv: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    delta = (adv - x).double().flatten(1)  # (B, D)
    return {"Linf": delta.abs().amax(dim=1), "L2": delta.norm(dim=1)}


def logit_stats(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image: CE loss of the true class, margin (true logit minus best other), prediction, p(true)."""
    logits = logits.detach().float()  # (B, classes)
    log_p_true = logits.log_softmax(dim=1).gather(1, y[:, None])[:, 0]  # (B,)
    true_logit = logits.gather(1, y[:, None])[:, 0]  # (B,)
    best_other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)  # (B,)
    return {"loss": -log_p_true, "margin": true_logit - best_other, "pred": logits.argmax(dim=1),
            "p_true": log_p_true.exp()}


class TraceRecorder:
    """Per-iteration statistics per image; rows are keyed by (restart, step, final) so batches line up.

    Images that a row does not cover (e.g. already fooled before a restart) hold NaN (pred: -1).
    """

    FIELDS = ("loss", "margin", "pred", "p_true")

    def __init__(self, n_images: int):
        self.n = n_images
        self.rows: dict[tuple[int, int, bool], dict[str, np.ndarray]] = {}

    def add(self, restart: int, step: int, final: bool, index: torch.Tensor, logits: torch.Tensor,
            y: torch.Tensor) -> None:
        key = (restart, step, final)
        row = self.rows.get(key)
        if row is None:
            row = {f: np.full(self.n, -1 if f == "pred" else np.nan,
                              dtype=np.int64 if f == "pred" else np.float32) for f in self.FIELDS}
            self.rows[key] = row
        stats = logit_stats(logits, y)
        idx = index.cpu().numpy()
        for f in self.FIELDS:
            row[f][idx] = stats[f].cpu().numpy()

    def result(self) -> dict[str, np.ndarray]:
        keys = sorted(self.rows, key=lambda k: (k[2], k[0], k[1]))  # iterates in order, the returned point last
        out = {"restart": np.array([k[0] for k in keys], dtype=np.int64),
               "step": np.array([k[1] for k in keys], dtype=np.int64),
               "final": np.array([k[2] for k in keys], dtype=bool)}
        for f in self.FIELDS:
            out[f] = np.stack([self.rows[k][f] for k in keys]) if keys else np.zeros((0, self.n))  # (T, N)
        return out


class RunContext:
    """What an attack's inner loop needs from the run: the counted model, progress, cancel, trace."""

    def __init__(self, model: CountingModel, progress: Progress | None, cancel, recorder: TraceRecorder | None,
                 total: int, name: str):
        self.model = model
        self.progress = progress
        self.cancel = cancel
        self.recorder = recorder
        self.total = max(int(total), 1)
        self.done = 0
        self.name = name
        self.stage = ""  # default progress message, e.g. the running sub-attack
        self.cancelled = False
        self.flags: list[str] = []
        self.details: dict = {}
        self.offset = 0  # index of the current batch's first image in the whole run
        self.seed: int = 0
        self.n_classes: int = 0
        self.generator: torch.Generator | None = None  # random starts come from here, never the global stream

    def cancel_requested(self) -> bool:
        if self.cancel is not None and self.cancel.is_set():
            self.cancelled = True
        return self.cancelled

    def advance(self, units: int = 1, message: str = "") -> None:
        self.done += units
        self.report(message)

    def report(self, message: str = "", done: int | None = None) -> None:
        if done is not None:
            self.done = done
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total, message or self.stage or self.name)

    def flag(self, message: str) -> None:
        if message not in self.flags:
            self.flags.append(message)

    def record(self, restart: int, step: int, logits: torch.Tensor, y: torch.Tensor,
               index: torch.Tensor | None = None, final: bool = False) -> None:
        """Trace one row for the current batch (`index`: positions inside the batch, default all)."""
        if self.recorder is None:
            return
        if index is None:
            index = torch.arange(logits.shape[0], device=y.device)
        self.recorder.add(restart, step, final, index + self.offset, logits, y)


def ce_loss_sum(logits: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Summed CE (so each image's gradient is independent of the batch); negated towards a target."""
    loss = F.cross_entropy(logits, goal, reduction="sum")
    return -loss if targeted else loss
