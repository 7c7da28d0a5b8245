"""SSM-specific gradient checks: float32 vs float64, scan vs sequential, convolution vs recurrent mode."""
from __future__ import annotations

import contextlib
import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._runtime import attack_mode

Forward = Callable[[torch.Tensor], torch.Tensor]


def input_gradient(forward: Forward, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, d sum-CE / dx) at x: the gradient every attack here follows."""
    x = x.detach().clone().requires_grad_(True)  # (B, C, S, S)
    with torch.enable_grad():
        logits = forward(x)  # (B, classes)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    return logits.detach(), grad.detach()


def compare_gradients(grad: torch.Tensor, reference: torch.Tensor, *, min_cosine: float = 0.99,
                      max_rel_error: float = 0.1) -> dict:
    """Per image cosine similarity, relative error ||g - ref|| / ||ref|| and sign agreement, plus a verdict.

    Sign agreement counts coordinates where the reference is not ~0: it is what a Linf attack steps along.
    """
    g, r = grad.double().flatten(1), reference.double().flatten(1)  # (B, D)
    g_norm, r_norm = g.norm(dim=1), r.norm(dim=1)  # (B,)
    both_zero = (g_norm == 0) & (r_norm == 0)
    cosine = torch.where(both_zero, torch.ones_like(g_norm),
                         (g * r).sum(dim=1) / (g_norm * r_norm).clamp_min(1e-300))
    rel_error = torch.where(both_zero, torch.zeros_like(g_norm), (g - r).norm(dim=1) / r_norm.clamp_min(1e-300))
    significant = r.abs() > 1e-6 * r.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)  # (B, D)
    same_sign = ((g.sign() == r.sign()) & significant).sum(dim=1) / significant.sum(dim=1).clamp_min(1)
    out = {
        "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
        "rel_error_max": float(rel_error.max()), "rel_error_mean": float(rel_error.mean()),
        "sign_agreement_min": float(same_sign.min()),
        "per_image": {"cosine": cosine.tolist(), "rel_error": rel_error.tolist(), "sign_agreement": same_sign.tolist()},
    }
    out["agree"] = bool(out["cosine_min"] >= min_cosine and out["rel_error_max"] <= max_rel_error)
    return out


def gradient_agreement(forward_a: Forward, forward_b: Forward, x: torch.Tensor, y: torch.Tensor, *,
                       label: str = "a vs b", min_cosine: float = 0.99, max_rel_error: float = 0.1) -> dict:
    """Input gradients of two implementations of the same model (b is the reference), in attack mode.

    Accepts modules or callables (bound methods of a module count as that module), e.g. Mamba's parallel
    scan against its sequential reference path.
    """
    with contextlib.ExitStack() as stack:
        for module in {id(m): m for m in (_owner(forward_a), _owner(forward_b)) if m is not None}.values():
            stack.enter_context(attack_mode(module))
        logits_a, grad_a = input_gradient(forward_a, x, y)
        logits_b, grad_b = input_gradient(forward_b, x.to(_dtype_of(forward_b, x.dtype)), y)
    out = compare_gradients(grad_a, grad_b, min_cosine=min_cosine, max_rel_error=max_rel_error)
    out["logit_max_abs_diff"] = float((logits_a.double() - logits_b.double()).abs().max())
    out["check"] = label
    out["flag"] = None if out["agree"] else (
        f"{label}: input gradients disagree (min cosine {out['cosine_min']:.4f}, max relative error "
        f"{out['rel_error_max']:.3g}); attacks following these gradients may under-report vulnerability")
    return out


def precision_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **thresholds) -> dict:
    """float32 input gradient against a float64 copy of the model (complex parameters go to complex128).

    A model whose gradient changes direction with precision (long scans, badly conditioned kernels)
    gives attacks a noisy direction: a robustness number measured on it is suspect.
    """
    model64 = _clone(model)
    model64._apply(_to_double)  # .double() would leave complex SSM parameters in single precision
    return gradient_agreement(model, model64, x.float(), y, label="float32 vs float64", **thresholds)


def scan_vs_sequential_check(scan_model: Forward, sequential_model: Forward, x: torch.Tensor, y: torch.Tensor,
                             **thresholds) -> dict:
    """Mamba's parallel scan against its sequential reference (mambapy #65 reports mismatches)."""
    return gradient_agreement(scan_model, sequential_model, x, y, label="parallel scan vs sequential", **thresholds)


def mode_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **thresholds) -> dict:
    """Convolution (or scan) mode against the token-by-token recurrence of an SSMClassifier."""
    if not callable(getattr(model, "forward_recurrent", None)):
        raise TypeError(f"{type(model).__name__} has no forward_recurrent method")
    return gradient_agreement(model.forward, model.forward_recurrent, x, y, label="convolution vs recurrent mode",
                              **thresholds)


def _clone(model: nn.Module) -> nn.Module:
    """A copy of the weights and architecture only: callers may hang locks or caches on a served model, which
    deepcopy cannot copy."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        twin = type(model)(type(config).from_dict(config.to_dict()))
        twin.load_state_dict(model.state_dict())
        return twin.train(model.training)
    return copy.deepcopy(model)


def _to_double(t: torch.Tensor) -> torch.Tensor:
    if t.is_complex():
        return t.to(torch.complex128)
    return t.to(torch.float64) if t.is_floating_point() else t


def _owner(forward) -> nn.Module | None:
    if isinstance(forward, nn.Module):
        return forward
    owner = getattr(forward, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _dtype_of(forward, default: torch.dtype) -> torch.dtype:
    owner = _owner(forward)
    param = next((p for p in owner.parameters() if p.is_floating_point()), None) if owner is not None else None
    return param.dtype if param is not None else default


def model_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """The SSM checks that apply to this model, on a few images: precision always; Mamba's scan against its
    sequential path when the model has selective scans."""
    results = [precision_check(model, x, y)]
    scans = [m for m in model.modules() if hasattr(m, "scan") and isinstance(m.scan, str)]
    if scans:
        sequential = _clone(model)
        for module in sequential.modules():
            if isinstance(getattr(module, "scan", None), str):
                module.scan = "sequential"
        results.append(scan_vs_sequential_check(model, sequential, x, y))
    return results
