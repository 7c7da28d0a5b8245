"""Attack one image: predictions before/after, trace, 8-bit survival check, and exportable artefacts."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssm_models.atomic import atomic_write

from .attacks import make_attack
from .data import model_classes
from .eps import eps_label
from .evaluate import model_identity, versions
from .image_fit import fit_image, resolve_fit
from .images import to_tensor


def first_image_probabilities(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.double(), dim=1)[0].numpy()


@torch.no_grad()
def probabilities(model, x: torch.Tensor) -> np.ndarray:
    model.eval()
    return first_image_probabilities(model(x))


def _first_image_trace(trace) -> dict:
    """Attack traces are per iteration and per image; keep image 0 as plain lists."""
    if not trace:
        return {}
    out = {}
    for key, values in dict(trace).items():
        arr = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values, dtype=np.float64)
        out[key] = (arr[:, 0] if arr.ndim == 2 else arr).tolist()
    return out


def first_success(trace: dict, label: int, target: int | None = None) -> tuple[int, int] | None:
    """(restart, iterate) where an own-loop attack such as PGD first fooled the model, from image 0's trace; None
    when no traced iterate fooled it. The attack returns that point, so its trace ends there (iterate 0 is the
    random start)."""
    rows = zip(trace.get("restart", []), trace.get("step", []), trace.get("final", []), trace.get("pred", []))
    for restart, step, final, pred in rows:
        if not final and pred >= 0 and (pred == target if target is not None else pred != label):
            return int(restart), int(step)
    return None


def attack_single(model, x: torch.Tensor, label: int | None, attack: str, *, seed: int = 0, progress=None,
                  cancel=None, **params) -> dict:
    """x: (1, C, S, S) in [0, 1]. label None means "the model's clean prediction" (an unlabelled upload)."""
    p_clean = probabilities(model, x)
    y_true = int(np.argmax(p_clean)) if label is None else int(label)
    atk = make_attack(attack, model, seed=seed, **params)
    cost = atk.cost(1)
    t0 = time.time()
    result = atk.run(x, torch.tensor([y_true]), progress=progress, cancel=cancel, trace=True)
    elapsed = time.time() - t0
    adv = result.adv.detach()
    p_adv = first_image_probabilities(result.logits)  # the attack's last pass already ran the model on adv
    quantized = torch.round(adv * 255) / 255  # what an 8-bit PNG stores
    p_png = probabilities(model, quantized)
    delta = adv - x
    flat = delta.flatten()

    def achieved(p: np.ndarray) -> bool:
        """The attack's goal, untargeted (any other class) or targeted (that class)."""
        return int(np.argmax(p)) == params["target"] if params.get("targeted") else int(np.argmax(p)) != y_true

    return {
        "x": x, "adv": adv, "delta": delta, "label": y_true, "label_given": label is not None,
        "p_clean": p_clean, "p_adv": p_adv,
        "pred_clean": int(np.argmax(p_clean)), "pred_adv": int(np.argmax(p_adv)), "pred_png": int(np.argmax(p_png)),
        "success": achieved(p_adv),
        # None when the attack failed: there is nothing to survive the rounding
        "survives_png": achieved(p_png) if achieved(p_adv) else None,
        "linf": float(flat.abs().max()), "l2": float(flat.norm()),
        "trace": _first_image_trace(getattr(result, "trace", None)),
        "cost": cost, "seconds": round(elapsed, 3), "cancelled": bool(getattr(result, "cancelled", False)),
        "flags": list(getattr(result, "flags", []) or []),
    }


def run_card(model, res: dict, attack: str, params: dict, seed: int, checkpoint: str, classes=None) -> dict:
    """Everything needed to reproduce and cite one single-image attack."""
    name = (lambda i: str(classes[i]) if classes is not None else str(i))
    eps = params.get("eps")
    return {
        "checkpoint": checkpoint, "model": model_identity(model),
        "attack": attack, "params": params, "seed": seed,
        "eps_label": eps_label(eps) if eps is not None else None,
        "results": {
            "label": name(res["label"]), "label_source": "given" if res["label_given"] else "clean prediction",
            "clean_prediction": name(res["pred_clean"]), "clean_confidence": float(res["p_clean"].max()),
            "adversarial_prediction": name(res["pred_adv"]), "adversarial_confidence": float(res["p_adv"].max()),
            "success": bool(res["success"]), "survives_8bit_png": res["survives_png"],
            "prediction_after_8bit_png": name(res["pred_png"]),
            "linf": res["linf"], "l2": res["l2"], "seconds": res["seconds"], "cancelled": res["cancelled"],
            "cost": res["cost"], "flags": res["flags"],
        },
        "versions": versions(),
    }


def save_artefacts(res: dict, card: dict, out_dir: str | Path) -> dict[str, Path]:
    """adversarial.png (8-bit), adversarial.npy (lossless float32 (C, S, S)), run_card.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adv = res["adv"][0].cpu()
    arr = (adv.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    paths = {"png": out / "adversarial.png", "npy": out / "adversarial.npy", "card": out / "run_card.json"}
    image = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    atomic_write(paths["png"], lambda stream: image.save(stream, format="PNG"))
    atomic_write(paths["npy"], lambda stream: np.save(stream, adv.numpy().astype(np.float32), allow_pickle=False))
    atomic_write(paths["card"], json.dumps(card, indent=1))
    return paths


def attack_image_file(model, image: str, attack: str, *, out_dir: str, seed: int = 0, checkpoint: str = "",
                      target: int | None = None, fit: str = "auto", **params) -> dict:
    """Attack one image file, fitted to the model as `fit` says (image_fit.FITS; auto frames digits for MNIST)."""
    cfg = model.config
    dataset = (cfg.meta or {}).get("dataset")
    x = to_tensor(fit_image(image, cfg.in_channels, cfg.image_size, fit, dataset))
    params = {k: v for k, v in params.items() if v is not None}
    if "eps" not in params:
        params["eps"] = cfg.meta.get("threat_model", {}).get("eps", 0.1)
    if target is not None:
        params.update(targeted=True, target=target)
    res = attack_single(model, x, None, attack, seed=seed, **params)
    card = run_card(model, res, attack, params, seed, checkpoint, model_classes(model))
    card["image_fit"] = resolve_fit(fit, cfg.in_channels, dataset)
    save_artefacts(res, card, out_dir)
    return card
