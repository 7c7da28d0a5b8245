"""SSM Robustness Lab models: S4, DSS, S5, Mega and Mamba image classifiers in pure PyTorch."""
from __future__ import annotations

import importlib

# Public name -> its module, imported on first use: `ssm_models.errors` (the UserError base that the torch-free
# front ends catch) must not load torch, which `import ssm_models` would otherwise do first
_EXPORTS = {
    "ConfigError": "errors",
    "ModelConfig": "config",
    "SSMClassifier": "classifier",
    "create_model": "classifier",
    "frozen": "classifier",
    "list_models": "families",
    "probe_names": "probes",
    "record": "probes",
    "register_model": "registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
