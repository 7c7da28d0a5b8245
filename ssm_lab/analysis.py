"""Per-layer, per-component error scaling between clean and adversarial hidden states (Qi et al. 2024, Sec. 4).

Definitions (the paper does not publish its code; these are ours):
- MSE at a probe: mean over every element of (f_clean - f_adv)^2.
- KL at a probe: softmax over the feature dimension, separately for every token, then
  KL(p_clean || p_adv) summed over features and averaged over tokens and images. For `pool` and `logits`
  (no token axis) the softmax is over features/classes; for `logits` this is the usual KL of predictions.
- Relative error at a probe: sum of (f_clean - f_adv)^2 over sum of f_clean^2, per image, then averaged. Unlike
  MSE it does not change when a component only rescales its output (AdS's `act(W y) * y` or a linear layer can
  multiply every feature by a large factor), so its change rate says whether the component amplifies the
  error relative to the signal it carries.
- Change rate of a component: (M_after - M_before) / M_before, where "before" is the component's own input and
  "after" its own output, both recorded in the same forward pass (`ssm_models.record`: a forward pre-hook beside
  each forward hook). So `residual_norm` compares LayerNorm(z) with z = x + mixer(x), Mega's attention its output
  with its values v and its gate with the candidate h, Mamba's conv its SiLU output with the x half of in_proj
  (each row names its input). r < 0: the component shrinks the clean/adversarial gap; r > 0: it amplifies it.
- Error along the sequence: per-token L2 norm of f_clean - f_adv, mapped back onto image coordinates.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn.functional as F

from ssm_models import record
from ssm_models.probes import input_description

_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
METRICS = ("mse", "kl", "rel")


def feature_kl(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per-image KL(softmax(clean) || softmax(adv)) over the last dimension, averaged over tokens: (B,)."""
    log_p = F.log_softmax(clean.double(), dim=-1)
    log_q = F.log_softmax(adv.double(), dim=-1)
    kl = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)  # (B, L) or (B,): p (log p - log q)
    return kl.reshape(kl.shape[0], -1).mean(1)  # (B,)


def _squared_error(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per-image sum of (clean - adv)^2 over every feature, in float64: (B,)."""
    diff = clean.double() - adv.double()
    return diff.reshape(diff.shape[0], -1).pow(2).sum(1)  # (B,)


def _squared_norm(clean: torch.Tensor) -> torch.Tensor:
    """Per-image sum of clean^2, kept from 0 so that an all-zero feature map divides safely: (B,)."""
    return clean.double().reshape(clean.shape[0], -1).pow(2).sum(1).clamp_min(1e-300)  # (B,)


def feature_mse(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    return _squared_error(clean, adv) / clean[0].numel()  # (B,)


def feature_relative_error(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per-image squared error over the clean features' squared norm: (B,), invariant to rescaling both."""
    return _squared_error(clean, adv) / _squared_norm(clean)  # (B,)


def _errors(f_clean: torch.Tensor, f_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three metrics of one pair as the functions above define them, with the float64 conversion and the
    squared error that MSE and relative error share made once."""
    clean, adv = f_clean.double(), f_adv.double()
    squared_error = _squared_error(clean, adv)  # (B,)
    return {"mse": squared_error / clean[0].numel(), "kl": feature_kl(clean, adv),
            "rel": squared_error / _squared_norm(clean)}  # each (B,)


def _view_key(t: torch.Tensor) -> tuple:
    """Equal for two tensors that view the same memory the same way (a recorded output and the next input)."""
    return t.data_ptr(), t.dtype, tuple(t.shape), t.stride(), t.storage_offset()


@torch.no_grad()
def probe_errors(model, x_clean: torch.Tensor, x_adv: torch.Tensor) -> "OrderedDict[str, dict]":
    """For every probe: per-image MSE, KL and relative error (B,) of its output and, under "input", of its own
    input; per-token error norms (B, L) of the output where there is a token axis."""
    model.eval()
    with record(model, detach=True) as clean:
        model(x_clean)
    with record(model, detach=True) as adv:
        model(x_adv)
    out: "OrderedDict[str, dict]" = OrderedDict()
    known: dict[tuple, dict] = {}

    def errors_of(f_clean: torch.Tensor, f_adv: torch.Tensor) -> dict[str, torch.Tensor]:
        # most components' input is the tensor the previous one returned: computed once (KL is the costly part)
        key = (_view_key(f_clean), _view_key(f_adv))
        if key not in known:
            known[key] = _errors(f_clean, f_adv)
        return dict(known[key])

    for name, f_clean in clean.items():
        entry = errors_of(f_clean, adv[name])
        entry["input"] = errors_of(clean.inputs[name], adv.inputs[name])
        if f_clean.dim() == 3:  # (B, L, H)
            entry["token_error"] = (f_clean - adv[name]).norm(dim=-1)  # (B, L)
        out[name] = entry
    return out


def error_scaling(model, x_clean: torch.Tensor, x_adv: torch.Tensor, batch_size: int = 128) -> dict:
    """Aggregate MSE/KL/relative error per probe (output, and `input`) and change rates per in-layer component,
    each from that component's own input and output, over a sample of (clean, adversarial) pairs."""
    sums: "OrderedDict[str, dict]" = OrderedDict()
    token_maps: dict[str, torch.Tensor] = {}
    n = len(x_clean)
    for start in range(0, n, batch_size):
        errors = probe_errors(model, x_clean[start:start + batch_size], x_adv[start:start + batch_size])
        for name, entry in errors.items():
            acc = sums.setdefault(name, {"output": dict.fromkeys(METRICS, 0.0), "input": dict.fromkeys(METRICS, 0.0)})
            for metric in METRICS:
                acc["output"][metric] += entry[metric].sum().item()
                acc["input"][metric] += entry["input"][metric].sum().item()
            if "token_error" in entry:
                per_image = model.token_map(entry["token_error"].float())  # (B, S, S)
                token_maps[name] = token_maps.get(name, 0) + per_image.sum(0)
    probes = OrderedDict((name, {**{m: v["output"][m] / n for m in METRICS},
                                 "input": {m: v["input"][m] / n for m in METRICS}}) for name, v in sums.items())
    components = []
    for name, probe in probes.items():
        match = _LAYER.match(name)
        if not match:
            continue
        row = {"layer": int(match.group(1)), "component": match.group(2), "probe": name,
               "input": input_description(model, name)}
        for metric in METRICS:
            b, a = probe["input"][metric], probe[metric]
            row[f"{metric}_before"], row[f"{metric}_after"] = b, a
            row[f"{metric}_change_rate"] = (a - b) / b if b > 0 else None
        components.append(row)
    maps = {name: (m / n).tolist() for name, m in token_maps.items()}
    return {"n": n, "probes": probes, "components": components, "token_error_maps": maps}


def summarize_by_component(components: list[dict], metric: str = "mse") -> dict[str, float]:
    """Mean change rate per component type over layers (the paper's bar chart)."""
    grouped: dict[str, list[float]] = {}
    for row in components:
        value = row.get(f"{metric}_change_rate")
        if value is not None:
            grouped.setdefault(row["component"], []).append(value)
    return {k: sum(v) / len(v) for k, v in grouped.items()}
