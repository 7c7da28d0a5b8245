"""The threat model a checkpoint states, else its data set's (DatasetInfo): the budget its attacks start from."""
from __future__ import annotations

from .datasets.info import DATASETS


def model_threat(model, dataset: str | None = None) -> tuple[float, float | None]:
    """(eps, PGD step or None) the model was trained for; a model stating none gets the data set's threat model
    (`dataset`, else the one its meta names), and a data set this project lacks RobustBench's Linf budget."""
    meta = model.config.meta or {}
    threat = meta.get("threat_model")
    threat = threat if isinstance(threat, dict) else {}
    eps, step = threat.get("eps"), threat.get("step_size")
    step = float(step) if isinstance(step, (int, float)) else None
    if isinstance(eps, (int, float)) and eps > 0:
        return float(eps), step
    info = DATASETS.get(str(dataset or meta.get("dataset")).lower())
    if info is not None:
        return info.eps, step
    from .attacks.base import DEFAULT_EPS  # torch is loaded already: there is a model

    return DEFAULT_EPS["Linf"], step
