"""Clean and robust accuracy with n, eps, Wilson intervals and provenance; eps curves and transfer matrices."""
from __future__ import annotations

import json
import math
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch

from ssm_models.atomic import atomic_write

from . import distributed
from .attacks import AttackParamError, make_attack
from .attacks.base import check_number, model_image_shape
from .eps import eps_label

Progress = Callable[[int, int, str], None]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_entry(correct: int, n: int) -> dict:
    lo, hi = wilson_interval(correct, n)
    return {"accuracy": correct / n if n else float("nan"), "correct": correct, "n": n, "ci95": [lo, hi]}


def versions() -> dict:
    import huggingface_hub

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "huggingface_hub": huggingface_hub.__version__, "platform": platform.platform()}
    for name in ("torchattacks", "pyautoattack", "numpy"):
        try:  # from the installed metadata: importing torchattacks would load scipy.stats, seconds of CPU
            out[name] = metadata.version(name)
        except Exception:  # noqa: BLE001 - a version string is informative, its absence is not an error
            out[name] = "unavailable"
    return out


def _display_path(value: str) -> str:
    """Absolute paths leak the machine's layout into shared reports: keep them relative to the project."""
    path = Path(value)
    if not path.is_absolute():
        return value
    root = Path(__file__).resolve().parent.parent
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.name


def model_identity(model) -> dict:
    info = dict(getattr(model, "source_info", {}) or {})
    for key in ("path", "source"):
        if isinstance(info.get(key), str):
            info[key] = _display_path(info[key])
    info["arch"] = model.config.arch
    info["config"] = {k: v for k, v in model.config.to_dict().items() if k != "meta"}
    return info


def attack_label(entry: dict) -> str:
    """An evaluation report's attack entry for people: 'pgd (steps=10, restarts=1)', and for a cancelled run
    '(cancelled: 40 of 100 images attacked)'."""
    params = ", ".join(f"{k}={v}" for k, v in (entry.get("params") or {}).items())
    partial = ""
    if not entry.get("complete", True):
        requested = entry.get("n_requested")
        partial = (f" (cancelled: {entry.get('n')} of {requested} images attacked)" if requested is not None
                   else " (cancelled: partial)")
    return entry["attack"] + (f" ({params})" if params else "") + partial


@torch.no_grad()  # no graph, and time-invariant kernels come from their cache
def predict(model, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def evaluate(model, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[dict], *, eps: float, norm: str = "Linf",
             batch_size: int = 100, seed: int = 0, progress: Progress | None = None, cancel=None,
             state_path: str | Path | None = None, data_info: dict | None = None, checks: int = 8) -> dict:
    """Evaluate `model` on (x, y) against each attack spec (`{"name": "pgd", "steps": 10, ...}`).

    Every attack runs on every clean-correct point (individual robust accuracies); the worst case marks a point
    robust only if it survived all attacks. A batch counts only when the attack ran to completion on every one of
    its images: a cancel inside a batch discards that batch, so each entry's `n` is the images attacked (not
    `n_requested`) and `complete` says whether that is all of them. With `state_path`, finished batches are saved
    after each batch (an unfinished one never is), and a re-run with the same arguments resumes where it stopped,
    recomputing the discarded batch. The SSM gradient checks (float32 vs float64, and
    scan vs sequential for Mamba) run on the first `checks` images; a failed one adds a flag to the report.
    """
    n = len(x)
    if n == 0:
        raise AttackParamError("x holds no images; evaluate needs at least one")
    batch_size = check_number("batch_size", batch_size, integer=True, positive=True)
    checks = check_number("checks", checks, lo=0, integer=True)
    expected = model_image_shape(model)
    if expected is not None and tuple(x.shape[1:]) != expected:  # before the clean pass fails on it, unexplained
        raise AttackParamError(f"the model expects images of shape {expected}, got {tuple(x.shape[1:])}")
    t0 = time.time()
    clean_pred = predict(model, x, batch_size)
    clean_ok = clean_pred == y
    state = _shared_state(state_path, n, eps, attacks, seed)
    results = {}
    for spec in attacks:
        spec = dict(spec)
        name = spec.pop("name")
        key = json.dumps({"name": name, **spec}, sort_keys=True)
        done = state["attacks"].setdefault(key, {"robust": [None] * n, "seconds": 0.0, "flags": []})
        preds = done.setdefault("pred", [None] * n)  # adversarial prediction per point (clean one if already wrong)
        attack = make_attack(name, model, **{"eps": eps, "norm": norm, "seed": seed, **spec})
        todo = [i for i in range(n) if done["robust"][i] is None]
        seconds_before, mine, cancelled = done["seconds"], [], False
        # Under torchrun each rank takes whole batches of the single-process batching, round-robin: an attack's
        # random start depends on the batch it is run on, so identical batches give bit-identical results.
        for start in distributed.shard(range(0, len(todo), batch_size)):
            idx = todo[start:start + batch_size]
            outcome = None if cancel is not None and cancel.is_set() else \
                _attack_batch(attack, x, y, idx, clean_ok, clean_pred, cancel)
            if outcome is None:
                cancelled = True
                break
            for i, still, p in zip(idx, outcome.robust, outcome.preds):
                done["robust"][i], preds[i] = still, p
            done["seconds"] += outcome.seconds
            done["flags"] = sorted(set(done["flags"]) | set(outcome.flags))
            mine += idx
            if distributed.is_main():
                _save_state(state_path, state)
            if progress is not None:
                progress(n - sum(r is None for r in done["robust"]), n, f"{name}: {start + len(idx)}/{len(todo)}")
        if distributed.world_size() > 1:
            _merge_ranks(done, preds, mine, seconds_before)
            if distributed.is_main():
                _save_state(state_path, state)
        robust = [bool(r) for r in done["robust"] if r is not None]
        entry = accuracy_entry(sum(robust), len(robust))
        entry.update(attack=name, params=spec, seconds=round(done["seconds"], 2), flags=done["flags"],
                     n_requested=n, complete=len(robust) == n, cancelled=cancelled, predictions=list(preds))
        results[key] = entry
    report = {
        "n": n,
        "threat_model": {"norm": norm, "eps": eps, "eps_label": eps_label(eps)},
        "clean": accuracy_entry(int(clean_ok.sum()), n),
        "attacks": list(results.values()),
        "worst_case": _worst_case([state["attacks"][key] for key in results], clean_ok, n),
        "seed": seed,
        "seconds": round(time.time() - t0, 2),
        "model": model_identity(model),
        "data": data_info or {},
        "versions": versions(),
        "complete": all(r["complete"] for r in results.values()),
    }
    report["gradient_checks"] = _gradient_checks(model, x[:checks], y[:checks]) if checks else []
    report["flags"] = sorted({f for a in report["attacks"] for f in a["flags"]}
                             | {c["flag"] for c in report["gradient_checks"] if c["flag"]})
    report["model_info"] = model_info(report)
    return report


class BatchOutcome(NamedTuple):
    robust: list[bool]
    preds: list[int]
    flags: list[str]
    seconds: float


def _attack_batch(attack, x, y, idx: list[int], clean_ok, clean_pred, cancel) -> BatchOutcome | None:
    """Robustness and prediction of each image of the batch, or None when the attack did not run to completion on
    every clean-correct image of it (a cancel): such a batch measured nothing and is not kept."""
    robust, preds = [False] * len(idx), [int(clean_pred[i]) for i in idx]  # a clean error is not robust
    ok = [k for k, i in enumerate(idx) if clean_ok[i]]
    if not ok:
        return BatchOutcome(robust, preds, [], 0.0)
    rows = [idx[k] for k in ok]
    t0 = time.time()
    result = attack.run(x[rows], y[rows], cancel=cancel)
    if not bool(result.completed.all()):
        return None
    adv_pred = result.pred  # the attack already classified its final points
    for k, still, p in zip(ok, (adv_pred == y[rows]).tolist(), adv_pred.tolist()):
        robust[k], preds[k] = bool(still), int(p)
    return BatchOutcome(robust, preds, list(getattr(result, "flags", []) or []), time.time() - t0)


def _worst_case(entries: list[dict], clean_ok, n: int) -> dict | None:
    """Robust accuracy under the worst of the attacks, over the images every one of them attacked."""
    measured = [i for i in range(n) if all(e["robust"][i] is not None for e in entries)]
    if not entries or not measured:
        return None
    worst = [all(e["robust"][i] for e in entries) and bool(clean_ok[i]) for i in measured]
    return {**accuracy_entry(sum(worst), len(measured)), "n_requested": n, "complete": len(measured) == n}


def _merge_ranks(done: dict, preds: list, mine: list[int], seconds_before: float) -> None:
    """Give every rank every rank's per-point results (exact values, original order), summed attack time and flags."""
    parts = distributed.all_gather_object({"points": [(i, done["robust"][i], preds[i]) for i in mine],
                                           "seconds": done["seconds"] - seconds_before, "flags": done["flags"]})
    for part in parts:
        for i, robust, pred in part["points"]:
            done["robust"][i], preds[i] = robust, pred
    done["seconds"] = seconds_before + sum(part["seconds"] for part in parts)
    done["flags"] = sorted(set().union(*(part["flags"] for part in parts)))


def _gradient_checks(model, x, y) -> list[dict]:
    from .attacks.checks import model_checks

    keep = ("check", "agree", "cosine_min", "rel_error_max", "logit_max_abs_diff", "flag")
    return [{k: c.get(k) for k in keep} for c in model_checks(model, x, y)]


def evaluate_dataset(model, data, attacks: Sequence[dict], n: int, eps: float, batch_size: int = 100, seed: int = 0,
                     **kwargs) -> dict:
    """`evaluate` on a seeded, class-stratified sample of n images of an ImageDataset (see ssm_lab.data)."""
    from .data import sample_indices

    idx = sample_indices(data, min(n, len(data.labels)), seed)
    x, y = data.tensors(idx)
    info = {"dataset": data.name, "split": data.split, "source": data.source, "origin": data.detail,
            "warning": data.warning, "n": len(y), "seed": seed}
    return evaluate(model, x, y, attacks, eps=eps, batch_size=batch_size, seed=seed, data_info=info, **kwargs)


def model_info(report: dict) -> dict:
    """The RobustBench model_info fields (percent strings) for this run; robust accuracy is the worst case."""
    model, data = report["model"], report.get("data") or {}
    robust = report["worst_case"] or {"accuracy": float("nan")}
    if not robust.get("complete", True):  # a partial run states no headline robust accuracy
        robust = {"accuracy": float("nan")}
    return {
        "name": model.get("source") or model.get("arch"),
        "architecture": model.get("arch"),
        "dataset": data.get("dataset"),
        "threat_model": report["threat_model"]["norm"],
        "eps": report["threat_model"]["eps_label"],
        "clean_acc": f"{100 * report['clean']['accuracy']:.2f}",
        "robust_acc": f"{100 * robust['accuracy']:.2f}",
        "autoattack_acc": next((f"{100 * a['accuracy']:.2f}" for a in report["attacks"]
                                if a["attack"] == "autoattack" and a["complete"]), None),
        "complete": report["complete"],
        "n_examples": report["n"],
        "attacks": [a["attack"] for a in report["attacks"]],
        "reported": None,
        "additional_data": False,
    }


def _shared_state(path, n, eps, attacks, seed) -> dict:
    """The resume state, read by rank 0 and handed to every rank. A rank that reached this point late must not
    read the file itself: rank 0 may already have saved its first batches there, and the late rank would then
    shard a shorter to-do list than rank 0 and attack other batches (seen under load: half the points lost)."""
    if distributed.world_size() == 1:
        return _load_state(path, n, eps, attacks, seed)
    loaded = None
    if distributed.is_main():
        try:
            loaded = _load_state(path, n, eps, attacks, seed)
        except ValueError as exc:  # every rank raises it, rather than the others waiting forever
            loaded = exc
    loaded = distributed.broadcast_object(loaded)
    if isinstance(loaded, Exception):
        raise loaded
    return loaded


def _load_state(path, n, eps, attacks, seed) -> dict:
    signature = {"n": n, "eps": eps, "seed": seed, "attacks": json.dumps(list(attacks), sort_keys=True)}
    if path is not None and Path(path).exists():
        state = json.loads(Path(path).read_text())
        if state.get("signature") != signature:
            raise ValueError(f"state file {path} was written for a different evaluation; remove it or choose another")
        return state
    return {"signature": signature, "attacks": {}}


def _save_state(path, state) -> None:
    """The resume file (JSON): {"signature": {n, eps, seed, attacks}, "attacks": {spec key: {"robust": [true,
    false or null per image], "pred": [int or null], "seconds", "flags"}}}; null = not attacked yet. Only whole,
    completed batches are ever written, atomically (fsynced temp file, then rename), so a SIGKILL at any moment
    leaves the previous state or the next one."""
    if path is not None:
        atomic_write(path, json.dumps(state))


def eps_curve(models: dict, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float], attack: dict,
              *, norm: str = "Linf", seed: int = 0, batch_size: int = 100, progress: Progress | None = None,
              cancel=None) -> dict:
    """Robust accuracy against one attack for several models over a list of eps values (same points for all)."""
    curves = {}
    total, done = len(models) * len(eps_values), 0
    for label, model in models.items():
        rows = []
        for eps in eps_values:
            if eps == 0:
                correct = int((predict(model, x, batch_size) == y).sum())
                rows.append({"eps": 0.0, **accuracy_entry(correct, len(x))})
            else:
                rep = evaluate(model, x, y, [attack], eps=eps, norm=norm, batch_size=batch_size, seed=seed,
                               cancel=cancel)
                rows.append({"eps": eps, **rep["attacks"][0]})
            done += 1
            if progress is not None:
                progress(done, total, f"{label} eps={eps_label(eps)}")
        curves[label] = rows
    return {"n": len(x), "attack": attack, "norm": norm, "curves": curves}


def transfer_matrix(models: dict, x: torch.Tensor, y: torch.Tensor, attack: dict, *, eps: float, seed: int = 0,
                    batch_size: int = 100, progress: Progress | None = None, cancel=None) -> dict:
    """Accuracy of each target model on adversarial examples crafted on each source model (rows: source).

    After a cancel, a row counts only the images its attack finished (its cells' `n`), rows of sources never
    reached are left out (`sources` lists the rows), and `complete` is False."""
    labels = list(models)
    matrix, complete = [], True
    for step, source in enumerate(labels):
        spec = dict(attack)
        result = make_attack(spec.pop("name"), models[source], eps=eps, seed=seed, **spec).run(x, y, cancel=cancel)
        attacked = result.completed  # (N,) bool
        complete = bool(attacked.all())
        if attacked.any():
            adv, truth = result.adv[attacked], y[attacked]
            matrix.append([accuracy_entry(int((predict(models[t], adv, batch_size) == truth).sum()), len(truth))
                           for t in labels])
        if progress is not None:
            progress(step + 1, len(labels), f"crafted on {source}")
        if not complete:
            break
    return {"n": len(x), "eps": eps, "eps_label": eps_label(eps), "attack": attack, "models": labels,
            "sources": labels[:len(matrix)], "matrix": matrix, "complete": complete}
