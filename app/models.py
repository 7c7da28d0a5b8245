"""Model catalogue (shipped checkpoints, Hub repos), cards as markdown, and a small LRU of loaded models."""
from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from ssm_lab.catalogue import (
    ARCH_NAMES,
    DATASET_DISPLAY_NAMES,
    METHOD_NAMES,
    headline_metrics,
    lead_order,
    threat_model_figures,
)

from .limits import LIMITS, LimitError


def checkpoint_root() -> Path:
    """$SSM_LAB_CHECKPOINTS, else the repository's checkpoints/ directory."""
    if os.environ.get("SSM_LAB_CHECKPOINTS"):
        return Path(os.environ["SSM_LAB_CHECKPOINTS"]).expanduser().resolve()
    from ssm_models.hub import SHIPPED_ROOT

    return Path(SHIPPED_ROOT)


CATALOGUE_TTL_S = 30.0  # cards and menus re-read the checkpoint folder at most this often
_catalogue_cache: dict = {"root": None, "time": 0.0, "entries": []}


def catalogue() -> list[dict]:
    """Shipped checkpoints with weights, grouped by dataset, architecture, training method and AdS."""
    from ssm_lab.catalogue import catalogue_entries

    root, now = checkpoint_root(), time.monotonic()
    if _catalogue_cache["root"] == root and now - _catalogue_cache["time"] < CATALOGUE_TTL_S:
        return list(_catalogue_cache["entries"])
    entries = catalogue_entries(root)
    _catalogue_cache.update(root=root, time=now, entries=entries)
    return list(entries)


def default_checkpoint(entries: list[dict] | None = None) -> str | None:
    """Prefer a standard-trained MNIST model (fast, and attacks visibly succeed), else the first one."""
    entries = catalogue() if entries is None else entries
    for wanted in (("mnist", "st"), ("mnist", None), (None, None)):
        for e in entries:
            if (wanted[0] is None or e["dataset"] == wanted[0]) and (wanted[1] is None or e["method"] == wanted[1]):
                return e["name"]
    return None


def resolve_source(name: str) -> str:
    """A shipped checkpoint name or a Hub repo id (`org/name[@revision]`) -> what load_model takes.

    Local paths are refused: a public server must not read arbitrary directories of its host."""
    from ssm_models.hub import resolve_checkpoint

    text = str(name or "").strip()
    if not text:
        raise LimitError("choose a model: a shipped checkpoint or a Hub repo id such as org/name")
    if text.startswith((".", "/", "~")) or "\\" in text or ".." in text.split("@")[0]:
        raise LimitError(f"{text!r}: the web app loads shipped checkpoints and Hub repo ids only, not local paths")
    root = checkpoint_root()
    target = resolve_checkpoint(text, root=root)
    if Path(target).is_absolute() and Path(os.path.realpath(root)) not in Path(os.path.realpath(target)).parents:
        raise LimitError(f"{text!r} is neither a shipped checkpoint nor a Hub repo id")
    return target


class ModelCache:
    """Least-recently-used loaded models; loading happens outside the lock so a slow download blocks no one else."""

    def __init__(self, capacity: int = LIMITS.model_cache):
        self.capacity = max(1, capacity)
        self._models: "OrderedDict[str, object]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, revision: str | None = None):
        source = resolve_source(name)
        revision = (revision or "").strip() or None
        key = json.dumps([source, revision])
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        from ssm_models.hub import load_model

        model = load_model(source, revision=revision)
        model.source_info = {**getattr(model, "source_info", {}), "name": name}
        model.use_lock = threading.Lock()  # attacks toggle eval/frozen state: one request per model at a time
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return model

    def __len__(self) -> int:
        return len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODELS = ModelCache()


def card_markdown(model, name: str) -> str:
    """What the model is, how it was trained and what its card says it scores."""
    cfg = model.config
    meta = cfg.meta or {}
    info = getattr(model, "source_info", {}) or {}
    n_params = sum(p.numel() for p in model.parameters())
    threat = meta.get("threat_model") or {}
    threat_text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in threat.items()) \
        if isinstance(threat, dict) else str(threat)
    dataset = DATASET_DISPLAY_NAMES.get(meta.get("dataset"), meta.get("dataset", "?"))
    lines = [f"**{ARCH_NAMES.get(cfg.arch, cfg.arch)}** on **{dataset}**"
             f", trained with **{METHOD_NAMES.get(meta.get('method'), meta.get('method', '?'))}**, "
             f"{'AdS ' + cfg.ads if cfg.ads else 'no AdS'}",
             f"- input {cfg.in_channels}x{cfg.image_size}x{cfg.image_size}, {cfg.num_classes} classes, "
             f"{cfg.tokenizer} tokens (L={cfg.seq_len}), {cfg.n_layers} layers, width {cfg.d_model}, "
             f"state {cfg.d_state}, {n_params:,} parameters",
             f"- threat model: {threat_text or 'not stated'}",
             f"- source: `{name}`" + (f" at commit `{info['revision'][:12]}`" if info.get("revision") else "")]
    entry = next((e for e in _safe_catalogue() if e["name"] == name), None)
    numbers = headline_metrics(entry["metrics"]) if entry else {}
    lead = threat_model_figures(entry["metrics"], entry["threat_eps"]) if entry else []
    eps = entry["threat_eps"] if entry else None
    if eps is not None and len(lead) > 1:  # AutoAttack leads; PGD-10 (weaker) follows it
        lines += ["", f"**At the threat model (eps {eps:.4g}):** " + " · ".join(
            f"{what} {text}" + (" (headline)" if what == "AutoAttack" else " (weaker, secondary)"
                                if what == "PGD-10" else "") for what, text in lead)]
    if numbers:
        lines += ["", "| metric (card) | value |", "|---|---|"] + [f"| {k} | {numbers[k]:.2%} |"
                                                                 for k in lead_order(numbers)]
    return "\n".join(lines)


MAX_CURVES_BYTES = 4 * 2**20


def training_curves(name: str) -> dict | None:
    """The curves.json that training wrote beside a shipped checkpoint (None for Hub models or when absent)."""
    entry = next((e for e in _safe_catalogue() if e["name"] == name), None)
    path = Path(entry["path"]) / "curves.json" if entry else None
    if path is None or not path.is_file() or path.stat().st_size > MAX_CURVES_BYTES:
        return None
    try:
        curves = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return curves if isinstance(curves, dict) and curves.get("history") else None


def _safe_catalogue() -> list[dict]:
    try:
        return catalogue()
    except Exception:  # noqa: BLE001 - a broken checkpoint directory must not hide the card of a loaded model
        return []
