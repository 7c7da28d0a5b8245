"""Card metrics: clean accuracy, then AutoAttack (the headline), PGD-10 and the masking gap on one stratified sample."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

from .attacks import make_attack
from .data import bundled_sample, load_dataset, sample_indices
from .datasets.info import DATASETS
from .eps import eps_label
from .evaluate import accuracy_entry, evaluate, predict
from .intervals import paired_difference

# Bump when a field's measuring protocol changes: a stored entry with another code is measured again.
CARD_CODE = "card-metrics-2"
CARD_EPS = {name: info.card_eps for name, info in DATASETS.items()}
PGD_STEP = {name: info.card_pgd_step for name, info in DATASETS.items()}  # eps -> the PGD-10 step on the cards
ATTACK_FIELDS = ("autoattack", "pgd10", "masking")
DEFAULT_N = 1000  # a Wilson half-width of at most 3.1 points at any accuracy
AA_BATCH = 250
SAMPLE_N, SAMPLE_SEED = 200, 0


def card_metrics(model, dataset: str, *, n: int = DEFAULT_N, seed: int = 0, eps: tuple[float, ...] | None = None,
                 data_dir=None, previous: dict | None = None, attacks_only: bool = False,
                 state_dir: str | Path | None = None, save: Callable[[dict], None] | None = None,
                 log=print) -> dict:
    """Clean accuracy on the whole test set; AutoAttack standard and PGD-10 on the same n stratified test images
    at each card eps; the PGD-10 minus AutoAttack gap with Newcombe's paired interval beside Square's extra drop.

    previous: a metrics.json measured before. A field measured on the same test data with the same n, seed and
    CARD_CODE is kept, not recomputed. attacks_only: re-measure the AutoAttack, PGD-10 and masking fields and keep
    every other field of `previous`. save(metrics) runs after every field, so a killed run loses one field at most;
    state_dir holds the attacks' own resume state (AutoAttack per sub-attack, PGD per batch) for that field.
    """
    test = load_dataset(dataset, "test", data_dir=data_dir)
    x_all, y_all = test.tensors()
    n = min(int(n), len(y_all))
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    digest = hashlib.sha256(x_all.numpy().tobytes() + y_all.numpy().tobytes()).hexdigest()
    metrics = _reusable(previous, dataset, digest, len(y_all), attacks_only)
    metrics.update(dataset=dataset, test_source=test.source, test_warning=test.warning, test_sha256=digest,
                   code=CARD_CODE)
    t0 = time.time()
    if (metrics.get("clean") or {}).get("n") != len(y_all):
        metrics["clean"] = accuracy_entry(int((predict(model, x_all) == y_all).sum()), len(y_all))
        log(f"clean {metrics['clean']['accuracy']:.4f} on {len(y_all)}")
    if (metrics.get("clean_sample") or {}).get("seed") != SAMPLE_SEED:
        metrics["clean_sample"] = clean_sample(model, test)
    if "clean_bundled_sample" not in metrics:
        metrics["clean_bundled_sample"] = clean_bundled_sample(model, dataset)
    _save(save, metrics)
    x, y = test.tensors(sample_indices(test, n, seed))
    for value in eps or CARD_EPS[dataset]:
        label = eps_label(value)
        for field, measure in (("autoattack", _autoattack), ("pgd10", _pgd10)):
            entries = metrics.setdefault(field, {})
            if _current(entries.get(label), n, seed):
                log(f"{field} eps {label}: kept (n={n}, seed {seed}, {CARD_CODE})")
                continue
            state = None if state_dir is None else Path(state_dir) / f"{field}-eps{value:.6g}-n{n}-seed{seed}"
            started = time.time()
            entries[label] = {**measure(model, x, y, value, seed, state, dataset), "seed": seed, "code": CARD_CODE,
                              "seconds": round(time.time() - started, 1)}
            log(f"{field} eps {label}: {entries[label]['accuracy']:.4f} (n={n}) in {entries[label]['seconds']} s")
            _save(save, metrics)
        metrics.setdefault("masking", {})[label] = masking_entry(metrics["pgd10"][label], metrics["autoattack"][label])
    metrics["seconds"] = round(time.time() - t0, 1)
    _save(save, metrics)
    return metrics


def clean_sample(model, test) -> dict:
    """Clean accuracy on the fixed 200-image sample the test suite re-checks every shipped checkpoint on."""
    x, y = test.tensors(sample_indices(test, SAMPLE_N, SAMPLE_SEED))
    return {**accuracy_entry(int((predict(model, x) == y).sum()), len(y)), "seed": SAMPLE_SEED}


def clean_bundled_sample(model, dataset: str) -> dict:
    """Clean accuracy on the 1,000-image sample shipped in the package: a figure any machine can re-check."""
    x, y = bundled_sample(dataset).tensors()
    return accuracy_entry(int((predict(model, x) == y).sum()), len(y))


def masking_entry(pgd: dict, autoattack: dict) -> dict:
    """The gradient-masking diagnostic: how far PGD-10 overstates AutoAttack on the same images (paired interval),
    beside the extra points Square (gradient-free) took after the gradient attacks."""
    diff = paired_difference(robust_flags(pgd), robust_flags(autoattack))
    return {"eps": autoattack["eps"], "gap": diff["difference"], "ci95": diff["ci95"], "n": diff["n"],
            "pgd_only": diff["only_first"], "autoattack_only": diff["only_second"],
            "square_extra_drop": autoattack.get("square_extra_drop")}


def robust_flags(entry: dict) -> list[bool]:
    """The per-image outcomes a card entry stores as a '0'/'1' string (image order of the stratified sample)."""
    return [c == "1" for c in entry["robust"]]


def _flags_text(robust) -> str:
    return "".join("1" if r else "0" for r in robust)


def _reusable(previous: dict | None, dataset: str, digest: str, n_test: int, attacks_only: bool) -> dict:
    # the test images' digest, not their source line: the same files reached by another path are the same data
    if not isinstance(previous, dict) or previous.get("dataset") != dataset:
        return {}
    recorded = previous.get("test_sha256")
    if recorded is None and (previous.get("clean") or {}).get("n") != n_test:
        return {}  # written before the digest was recorded, on another test set
    if recorded is not None and recorded != digest:
        return {}  # other test data: nothing measured before describes these images
    kept = {k: v for k, v in previous.items() if k != "seconds"}
    if attacks_only:
        kept = {k: v for k, v in kept.items() if k not in ATTACK_FIELDS}
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in kept.items()}


def _current(entry, n: int, seed: int) -> bool:
    return (isinstance(entry, dict) and entry.get("code") == CARD_CODE and entry.get("n") == n
            and entry.get("seed") == seed and isinstance(entry.get("robust"), str) and len(entry["robust"]) == n)


def _save(save, metrics: dict) -> None:
    if save is not None:
        save(metrics)


def _autoattack(model, x, y, eps: float, seed: int, state: Path | None, dataset: str) -> dict:
    path = None if state is None else state.with_name(state.name + ".safetensors")  # the eps has a dot
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    attack = make_attack("autoattack", model, eps=eps, version="standard", seed=seed, batch_size=AA_BATCH,
                         state_path=None if path is None else str(path))
    result = attack.run(x, y)
    if result.cancelled or not bool(result.completed.all()):
        raise RuntimeError(f"AutoAttack at eps {eps:g} did not finish ({int(result.completed.sum())}/{len(y)} "
                           "images); its sub-attack state is kept for a re-run")
    robust = result.robust.tolist()
    after = dict(result.details.get("robust_accuracy_after") or {})
    if path is not None:
        path.unlink(missing_ok=True)
    return {**accuracy_entry(sum(robust), len(robust)), "eps": eps, "version": "standard",
            "flags": list(result.flags), "robust_after": after, "square_extra_drop": square_extra_drop(after),
            "robust": _flags_text(robust)}


def square_extra_drop(after: dict) -> float | None:
    """Points of robust accuracy Square took after the white-box sub-attacks (None when Square did not run)."""
    stages = list(after)
    if "square" not in stages or stages.index("square") == 0:
        return None
    before = after[stages[stages.index("square") - 1]]
    return round(100 * (before - after["square"]), 4)


def _pgd10(model, x, y, eps: float, seed: int, state: Path | None, dataset: str) -> dict:
    path = None if state is None else state.with_name(state.name + ".json")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    step = PGD_STEP[dataset](eps)
    rep = evaluate(model, x, y, [{"name": "pgd", "steps": 10, "step_size": step}], eps=eps, seed=seed,
                   state_path=path, checks=0)
    entry = rep["attacks"][0]
    if not entry["complete"]:
        raise RuntimeError(f"PGD-10 at eps {eps:g} did not finish; its batch state is kept for a re-run")
    robust = [p == int(label) for p, label in zip(entry["predictions"], y.tolist())]
    if path is not None:
        path.unlink(missing_ok=True)
    return {**accuracy_entry(sum(robust), len(robust)), "eps": eps, "step_size": step,
            "clean_on_sample": rep["clean"], "robust": _flags_text(robust)}
