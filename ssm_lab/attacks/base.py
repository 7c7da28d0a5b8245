"""The `Attack` base class: parameter checks, budgets, batching, cancel, seeds, traces and the final projection."""
from __future__ import annotations

import functools
import inspect
import math
import secrets
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ssm_models.bounds import check_number as bounded_number
from ssm_models.errors import UserError

from ..attack_registry import NORMS
from ._runtime import (
    Cancelled,
    CountingModel,
    Progress,
    RunContext,
    TraceRecorder,
    attack_mode,
    perturbation_norms,
    preserve_global_rng,
    project,
)

# Hard caps: a request above them is refused before any work starts (the app is a shared CPU service).
MAX_STEPS = 1000
MAX_RESTARTS = 20
MAX_QUERIES = 10_000
MAX_TARGETS = 20
MAX_BATCH = 1024
MAX_IMAGES = 10_000
MAX_IMAGE_NUMEL = 4 * 128 * 128  # the largest image a ModelConfig allows
DEFAULT_EPS = {"Linf": 8 / 255, "L2": 0.5}  # RobustBench's CIFAR-10 threat models


def model_image_shape(model) -> tuple[int, int, int] | None:
    """(C, S, S) from the model's config (an SSMClassifier's), None for a model that does not state it."""
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "in_channels") and hasattr(cfg, "image_size"):
        return (cfg.in_channels, cfg.image_size, cfg.image_size)
    return None


class AttackParamError(ValueError, UserError):
    """An attack parameter or input that cannot be used; the message names the parameter and the limit."""


# every attack parameter is checked by the one bounded-number check, raising this module's error
check_number = functools.partial(bounded_number, error=AttackParamError)


def check_steps(steps, lo: int = 1) -> int:
    """An iteration count within [lo, MAX_STEPS]; PGD allows 0 (its random start alone)."""
    return check_number("steps", steps, lo=lo, hi=MAX_STEPS, integer=True, cap="MAX_STEPS")


def check_restarts(restarts) -> int:
    return check_number("restarts", restarts, lo=1, hi=MAX_RESTARTS, integer=True, cap="MAX_RESTARTS")


@dataclass
class AttackResult:
    """Adversarial batch and what happened while making it (counts are per image: a batch of 8 counts 8)."""

    adv: torch.Tensor  # (N, C, S, S) float32, inside the eps-ball and [0, 1]
    success: torch.Tensor  # (N,) bool: misclassified (untargeted) or classified as the target (targeted)
    pred: torch.Tensor  # (N,) predictions on adv
    labels: torch.Tensor  # (N,)
    target: torch.Tensor | None  # (N,) target classes of a targeted attack
    completed: torch.Tensor  # (N,) bool: the attack ran to its end on this image (False after a cancel)
    attack: str
    params: dict
    seed: int | None
    cancelled: bool = False
    elapsed: float = 0.0
    forward_calls: int = 0
    backward_calls: int = 0
    model_calls: int = 0
    flags: list[str] = field(default_factory=list)
    # trace (run(trace=True)): numpy arrays "restart", "step", "final" (T,) and "loss" (CE of the true class),
    # "margin" (true logit - best other), "pred", "p_true" (T, N). Rows: every iterate a gradient was taken at
    # (own loops) or the clean start (wrapped attacks), then the returned point (final=True). NaN: not attacked.
    trace: dict | None = None
    details: dict = field(default_factory=dict)
    logits: torch.Tensor | None = None  # (N, classes) on adv, from the pass that gave `pred`

    @property
    def robust(self) -> torch.Tensor:
        return self.pred == self.labels  # (N,)

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean())

    def summary(self) -> dict:
        """JSON-ready numbers (no tensors)."""
        return {"attack": self.attack, "params": self.params, "seed": self.seed, "n": len(self.labels),
                "robust_accuracy": self.robust_accuracy, "success_rate": float(self.success.float().mean()),
                "cancelled": self.cancelled, "completed": int(self.completed.sum()),
                "elapsed": round(self.elapsed, 4), "forward_calls": self.forward_calls,
                "backward_calls": self.backward_calls, "model_calls": self.model_calls, "flags": list(self.flags),
                "details": self.details}


class Attack:
    """Base class. Subclasses set the class attributes and implement `_attack` (one batch) and `_cost`.

    `run` owns everything else: input checks, eval mode with frozen parameters, counted model calls,
    batching, cancellation, global-RNG isolation, traces, and the final projection into the eps-ball
    and [0, 1], which applies to every attack, wrapped library ones included.
    """

    name = "attack"
    norms: tuple[str, ...] = NORMS
    supports_targeted = False
    randomised = False  # the result depends on the seed
    owns_loop = False  # iterations are ours, so traces and progress are per iteration
    uses_global_rng = True  # draws from torch's global stream (library attacks): such runs take turns across threads
    summary_text = ""

    def __init__(self, model: nn.Module, *, eps: float | None = None, norm: str = "Linf", seed: int | None = 0,
                 batch_size: int = 128, targeted: bool = False, target: int | None = None):
        if not isinstance(model, nn.Module):
            raise AttackParamError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        if norm not in self.norms:
            raise AttackParamError(f"{self.name} supports norm {' or '.join(self.norms)}, got {norm!r}")
        self.norm = norm
        self.eps = DEFAULT_EPS[norm] if eps is None else check_number("eps", eps, lo=0)
        if norm == "Linf" and self.eps > 1:
            raise AttackParamError(f"eps={self.eps} is above 1: for Linf that already covers the whole [0, 1] box")
        self.image_shape = self._configured_image_shape()
        if self.image_shape is not None:
            self._check_l2_eps(math.prod(self.image_shape))
        self.seed = None if seed is None else check_number("seed", seed, lo=0, hi=2**63 - 1, integer=True)
        self.batch_size = check_number("batch_size", batch_size, hi=MAX_BATCH, integer=True, positive=True,
                                       cap="MAX_BATCH")
        if not isinstance(targeted, (bool, np.bool_)):
            raise AttackParamError(f"targeted must be True or False, got {targeted!r}")
        self.targeted = bool(targeted)
        if self.targeted and not self.supports_targeted:
            raise AttackParamError(f"{self.name} has no targeted mode")
        if target is not None:
            if not self.targeted:
                raise AttackParamError("target is only used with targeted=True")
            target = check_number("target", target, lo=0, integer=True)
            n_classes = self.n_classes_hint(exact=True)
            if n_classes is not None and target >= n_classes:
                raise AttackParamError(f"target={target} is not a class of this model (0..{n_classes - 1})")
        self.target = target

    # ----- parameters -------------------------------------------------------------------------
    def _check_l2_eps(self, dim: int) -> None:
        if self.norm == "L2" and self.eps > math.sqrt(dim):
            raise AttackParamError(f"eps={self.eps} is above sqrt({dim})={math.sqrt(dim):.3f}, the L2 diameter of "
                                   f"the [0, 1] box for these images")

    def _configured_image_shape(self) -> tuple[int, ...] | None:
        return model_image_shape(self.model)

    def n_classes_hint(self, exact: bool = False) -> int | None:
        """Classes of the model without running it: config, a `num_classes` attribute, or the last Linear."""
        for owner in (getattr(self.model, "config", None), self.model):
            n = getattr(owner, "num_classes", None)
            if isinstance(n, int) and n > 1:
                return n
        if exact:
            return None
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        return linears[-1].out_features if linears else 10

    def params(self) -> dict:
        """The effective settings, JSON-ready (defaults resolved)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p not in ("self", "model")]
        return {p: getattr(self, p) for p in names if hasattr(self, p)}

    # ----- cost -------------------------------------------------------------------------------
    def cost(self, n_images: int, *, trace: bool = False) -> dict:
        """Upper bound on image-level forward and backward passes for `n_images`, stated before running."""
        n = check_number("n_images", n_images, lo=0, hi=MAX_IMAGES, integer=True, cap="MAX_IMAGES")
        fwd, bwd, text = self._cost(n, self.n_classes_hint())
        extra_fwd, notes = n, ["+1 forward per image to evaluate the result"]
        if self._configured_classes() is None:
            extra_fwd += 1  # one probe image: checks the output contract and learns the class count
            notes.append("+1 probe forward")
        if self.targeted and self.target is None:
            extra_fwd += n
            notes.append("+1 forward per image to pick the most likely wrong class")
        if trace and not self.owns_loop:
            extra_fwd += n
            notes.append("+1 forward per image for the trace's start point")
        if self.eps == 0:
            fwd, bwd, text = 0, 0, "eps=0: nothing to attack"
        return {"forward": int(fwd + extra_fwd), "backward": int(bwd), "upper_bound": True,
                "description": f"{text}; {', '.join(notes)}."}

    def _cost(self, n: int, n_classes: int) -> tuple[int, int, str]:
        raise NotImplementedError

    def _progress_total(self, n: int, n_classes: int) -> int:
        fwd, bwd, _ = self._cost(n, n_classes)
        return fwd + bwd

    # ----- running ----------------------------------------------------------------------------
    def run(self, x: torch.Tensor, y: torch.Tensor, *, progress: Progress | None = None, cancel=None,
            trace: bool = False) -> AttackResult:
        """Attack (x, y); x in [0, 1] of shape (N, C, S, S), y (N,) class indices."""
        x, y = self._check_inputs(x, y)
        if cancel is not None and not callable(getattr(cancel, "is_set", None)):
            raise AttackParamError("cancel must have an is_set() method, e.g. threading.Event")
        started = time.perf_counter()
        seed = self.seed if self.seed is not None else secrets.randbits(62)
        n = len(x)
        recorder = TraceRecorder(n) if trace else None
        with attack_mode(self.model), preserve_global_rng(x.device, seed, self.uses_global_rng), \
                torch.enable_grad():
            counted = CountingModel(self.model, cancel)
            counted.hook_backward = not self.owns_loop
            counted.armed = False  # set-up passes always run; cancel applies to the attack itself
            n_classes = self._configured_classes() or self._probe(counted, x)
            if int(y.max()) >= n_classes:
                raise AttackParamError(f"label {int(y.max())} is not a class of this model (0..{n_classes - 1})")
            goal = self._targets(counted, x, y, n_classes) if self.targeted else y
            ctx = RunContext(counted, progress, cancel, recorder, self._progress_total(n, n_classes), self.name)
            ctx.seed, ctx.n_classes = seed, n_classes
            ctx.generator = torch.Generator(device=x.device).manual_seed(seed)  # random starts, local stream
            if self.targeted and bool((goal == y).any()):
                ctx.flag(f"{int((goal == y).sum())} image(s) already carry the target class as their label")
            if not self.owns_loop:
                counted.on_call = lambda: ctx.report(done=counted.forward_images + counted.backward_images)
                if trace:
                    self._record_batched(counted, x, y, ctx, final=False)
            completed = torch.zeros(n, dtype=torch.bool, device=x.device)
            counted.armed = True
            if self.eps == 0:
                adv = x.clone()
                completed[:] = True
            else:
                adv = self._run_all(x, y, goal, ctx, completed)
            adv = project(adv.detach().float(), x, self.eps, self.norm)  # (N, C, S, S)
            counted.armed, counted.on_call = False, None
            logits = self._evaluate(counted, adv, y, ctx)  # (N, classes)
            pred = logits.argmax(dim=1)  # (N,)
        success = pred.eq(goal) if self.targeted else pred.ne(y)
        ctx.report("done", done=ctx.total)
        return AttackResult(
            adv=adv, success=success, pred=pred, labels=y, target=goal if self.targeted else None,
            completed=completed, attack=self.name, params=self.params(), seed=seed, cancelled=ctx.cancelled,
            elapsed=time.perf_counter() - started, forward_calls=counted.forward_images,
            backward_calls=counted.backward_images, model_calls=counted.calls, flags=list(ctx.flags),
            trace=recorder.result() if recorder is not None else None, details=ctx.details, logits=logits)

    def _run_all(self, x, y, goal, ctx: RunContext, completed: torch.Tensor) -> torch.Tensor:
        """Batches of `batch_size` through `_attack`; a cancel keeps the best-so-far of the current batch."""
        adv = x.clone()
        for start in range(0, len(x), self.batch_size):
            if ctx.cancel_requested():
                break
            part = slice(start, start + self.batch_size)
            ctx.offset = start
            try:
                adv[part] = self._attack(x[part], y[part], goal[part], ctx).detach()
            except Cancelled:
                ctx.cancelled = True
            if ctx.cancelled:
                break
            completed[part] = True
        return adv

    def _attack(self, x: torch.Tensor, y: torch.Tensor, goal: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        raise NotImplementedError

    # ----- helpers ----------------------------------------------------------------------------
    def _check_inputs(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_tensor(x) or not torch.is_tensor(y):
            raise AttackParamError("x and y must be torch tensors")
        if not x.is_floating_point():
            raise AttackParamError(f"x must be a float tensor in [0, 1], got dtype {x.dtype} (scale uint8 by 1/255)")
        if x.dim() < 2 or x.shape[0] == 0:
            raise AttackParamError(f"x must have shape (N, C, S, S) with N >= 1, got {tuple(x.shape)}")
        if x.shape[0] > MAX_IMAGES:
            raise AttackParamError(f"{x.shape[0]} images is above the limit of {MAX_IMAGES} (MAX_IMAGES) per run")
        numel = math.prod(x.shape[1:])
        if numel > MAX_IMAGE_NUMEL:
            raise AttackParamError(f"{numel} values per image is above the limit of {MAX_IMAGE_NUMEL} "
                                   "(MAX_IMAGE_NUMEL)")
        if self.image_shape is not None and tuple(x.shape[1:]) != self.image_shape:
            raise AttackParamError(f"the model expects images of shape {self.image_shape}, got {tuple(x.shape[1:])}")
        self._check_l2_eps(numel)
        x = x.detach().float()
        if not bool(torch.isfinite(x).all()):
            raise AttackParamError("x contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise AttackParamError(f"x must lie in [0, 1] (normalise inside the model), got values in "
                                   f"[{lo:.4g}, {hi:.4g}]")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise AttackParamError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
        if y.is_floating_point() or y.dtype == torch.bool:
            raise AttackParamError(f"y must hold integer class indices, got dtype {y.dtype}")
        y = y.detach().to(device=x.device, dtype=torch.long)
        if int(y.min()) < 0:
            raise AttackParamError(f"labels must not be negative, got {int(y.min())}")
        return x, y

    def _configured_classes(self) -> int | None:
        """A model with a config (SSMClassifier) states its classes, and its output contract holds by construction."""
        n = getattr(getattr(self.model, "config", None), "num_classes", None)
        return n if isinstance(n, int) and n > 1 else None

    def _probe(self, model: CountingModel, x: torch.Tensor) -> int:
        """One image through the model: the output contract is one (N, classes) logits tensor."""
        with torch.no_grad():
            out = model(x[:1])
        if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != 1 or out.shape[1] < 2:
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise AttackParamError(f"the model must return one (N, classes) logits tensor, got {got}")
        n_classes = out.shape[1]
        if self.target is not None and self.target >= n_classes:
            raise AttackParamError(f"target={self.target} is not a class of this model (0..{n_classes - 1})")
        return n_classes

    def _targets(self, model: CountingModel, x, y, n_classes: int) -> torch.Tensor:
        if self.target is not None:
            return torch.full_like(y, self.target)
        with torch.no_grad():  # most likely wrong class on the clean image
            logits = torch.cat([model(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        return logits.scatter(1, y[:, None], float("-inf")).argmax(dim=1)

    def _evaluate(self, model: CountingModel, adv, y, ctx: RunContext) -> torch.Tensor:
        """The model's logits (N, classes) on the returned images."""
        outputs = []
        with torch.no_grad():
            for start in range(0, len(adv), self.batch_size):
                logits = model(adv[start:start + self.batch_size])  # (B, classes)
                outputs.append(logits)
                if ctx.recorder is not None:
                    ctx.offset = start
                    ctx.record(-1, -1, logits, y[start:start + self.batch_size], final=True)
        return torch.cat(outputs)

    def _record_batched(self, model: CountingModel, x, y, ctx: RunContext, final: bool) -> None:
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                ctx.offset = start
                ctx.record(0, 0, model(x[start:start + self.batch_size]), y[start:start + self.batch_size],
                           final=final)


def inside_ball(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, tol: float = 1e-6) -> bool:
    """True when every image of adv is within eps (+ tol) of x in `norm` and inside [0, 1]."""
    dist = perturbation_norms(adv, x)[norm]
    return bool((dist <= eps + tol).all()) and float(adv.min()) >= 0 and float(adv.max()) <= 1
