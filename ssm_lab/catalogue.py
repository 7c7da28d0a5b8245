"""Checkpoints as a catalogue: dataset, architecture, training method, AdS and card metrics, read from their files.

Importing it imports no torch, so the app can build its page first."""
from __future__ import annotations

import os
from pathlib import Path

from .datasets.info import DATASETS
from .eps import eps_label
from .method_names import METHOD_NAMES

ARCH_NAMES = {"s4": "S4", "dss": "DSS", "s5": "S5", "mega": "Mega", "mamba": "Mamba"}
DATASET_DISPLAY_NAMES = {name: info.display_name for name, info in DATASETS.items()}
SIDE_METRICS = ("clean_on_sample", "ci95")  # numbers that qualify another one, not headline accuracies


def _leaves(values, path: tuple = ()):
    """(path, leaf) pairs of nested dicts, and of lists of dicts such as an evaluation's `attacks`."""
    if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
        values = {str(v.get("attack") or v.get("name") or i): v for i, v in enumerate(values)}
    if isinstance(values, dict):
        for key, value in values.items():
            yield from _leaves(value, path + (str(key),))
    else:
        yield path, values


def headline_metrics(metrics: dict | None) -> dict[str, float]:
    """Accuracies of a metrics.json by a short name: {'clean': 0.98, 'pgd10 0.3': 0.41, 'autoattack 0.3': 0.35}."""
    out = {}
    for path, value in _leaves(metrics or {}):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            continue
        if not path or "acc" not in path[-1].lower() or any(part in SIDE_METRICS for part in path):
            continue
        name = " ".join(p for p in path if p not in ("accuracy", "attacks"))  # 'attacks' only groups entries
        out[name or path[-1]] = float(value)
    return out


def lead_order(names) -> list[str]:
    """Metric names with clean first, then AutoAttack (the headline), then the rest (PGD-10, other tools' fields)."""
    return sorted(names, key=lambda k: (k != "clean", not k.startswith("autoattack")))


def at_eps(entries, eps: float) -> dict | None:
    """The metrics.json entry (keyed by an eps label) measured at `eps`."""
    if not isinstance(entries, dict):
        return None
    return next((v for v in entries.values() if isinstance(v, dict) and isinstance(v.get("eps"), (int, float))
                 and abs(v["eps"] - eps) < 1e-9), None)


def shown_accuracy(entry) -> str | None:
    """'30.1% (n=1,000)'; None for a metrics.json field of another tool that lacks an accuracy."""
    if not isinstance(entry, dict) or not isinstance(entry.get("accuracy"), (int, float)):
        return None
    n = entry.get("n")
    return f"{entry['accuracy']:.1%}" + (f" (n={n:,})" if isinstance(n, int) else "")


def threat_model_figures(metrics, eps: float | None) -> list[tuple[str, str]]:
    """The headline figures in the order the lab leads with: clean, AutoAttack at the threat model, then PGD-10
    (weaker, secondary); each with its n. Missing ones are left out."""
    metrics = metrics if isinstance(metrics, dict) else {}
    found = [("clean", metrics.get("clean"))]
    if eps is not None:
        found += [("AutoAttack", at_eps(metrics.get("autoattack"), eps)),
                  ("PGD-10", at_eps(metrics.get("pgd10"), eps))]
    return [(name, text) for name, value in found if (text := shown_accuracy(value))]


def describe_entry(entry: dict) -> dict:
    """One list_checkpoints() entry -> dataset, arch, method, AdS, threat-model eps and a one-line label."""
    cfg = entry["config"]
    meta = cfg.get("meta") or {}
    dataset = str(meta.get("dataset", "unknown"))
    method = str(meta.get("method", "unknown"))
    ads = f"AdS ({cfg['ads']})" if cfg.get("ads") else "no AdS"
    threat_eps = DATASETS[dataset].eps if dataset in DATASETS else None  # none for a dataset this project lacks
    shown = ", ".join(f"{name} {text}" for name, text in threat_model_figures(entry.get("metrics"), threat_eps))
    label = (f"{DATASET_DISPLAY_NAMES.get(dataset, dataset)} · {ARCH_NAMES.get(cfg['arch'], cfg['arch'])} · "
             f"{METHOD_NAMES.get(method, method)} · {ads}" + (f"  [{shown}]" if shown else "")
             + f"  ({entry['name']})")
    return {"name": entry["name"], "path": entry["path"], "dataset": dataset, "arch": cfg["arch"], "method": method,
            "ads": cfg.get("ads"), "label": label, "metrics": entry.get("metrics"), "config": cfg, "meta": meta,
            "threat_eps": threat_eps}


def catalogue_entries(root: str | os.PathLike | None = None) -> list[dict]:
    """Checkpoints with weights under `root` (default: the shipped ones), sorted by dataset, architecture, training
    method and AdS. `<name>/last` folders (a run's final epoch, kept beside the selected best one) are not models to
    offer."""
    from ssm_models.hub import SHIPPED_ROOT, list_checkpoints

    entries = [describe_entry(e) for e in list_checkpoints(Path(root or SHIPPED_ROOT))
               if e.get("has_weights", True) and not e["name"].endswith("/last")]
    entries.sort(key=lambda e: (e["dataset"], e["arch"], e["method"] != "st", e["method"], e["ads"] is not None,
                                e["name"]))
    return entries


def catalogue_rows(entries: list[dict]) -> tuple[list[str], list[list]]:
    """Headers and rows for a model table (every headline metric as a column)."""
    metric_keys = lead_order(dict.fromkeys(k for e in entries for k in headline_metrics(e["metrics"])))
    headers = ["name", "dataset", "arch", "method", "AdS"] + metric_keys
    rows = []
    for e in entries:
        numbers = headline_metrics(e["metrics"])
        rows.append([e["name"], e["dataset"], ARCH_NAMES.get(e["arch"], e["arch"]), METHOD_NAMES.get(e["method"],
                     e["method"]), e["ads"] or "-"] + [round(numbers[k], 4) if k in numbers else None
                                                       for k in metric_keys])
    return headers, rows


def threat_model_rows(entries: list[dict]) -> tuple[list[str], list[list[str]]]:
    """A compact table: clean accuracy, AutoAttack (the headline) and PGD-10 at each dataset's threat model, with n."""
    def shown(entry) -> str:
        return shown_accuracy(entry) or "-"

    headers = ["checkpoint", "dataset", "arch", "method", "AdS", "clean", "AutoAttack", "PGD-10", "eps"]
    rows = []
    for e in entries:
        metrics, eps = e["metrics"] if isinstance(e["metrics"], dict) else {}, e["threat_eps"]
        rows.append([e["name"], DATASET_DISPLAY_NAMES.get(e["dataset"], e["dataset"]),
                     ARCH_NAMES.get(e["arch"], e["arch"]),
                     METHOD_NAMES.get(e["method"], e["method"]), e["ads"] or "-", shown(metrics.get("clean")),
                     shown(at_eps(metrics.get("autoattack"), eps) if eps else None),
                     shown(at_eps(metrics.get("pgd10"), eps) if eps else None),
                     "-" if eps is None else eps_label(eps, approx=False)])
    return headers, rows
