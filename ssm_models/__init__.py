"""SSM Robustness Lab models: S4, DSS, S5, Mega and Mamba image classifiers in pure PyTorch."""
from .classifier import SSMClassifier, create_model, frozen
from .config import ConfigError, ModelConfig
from .families import list_models
from .probes import probe_names, record
from .registry import register_model

__all__ = [
    "ConfigError",
    "ModelConfig",
    "SSMClassifier",
    "create_model",
    "frozen",
    "list_models",
    "probe_names",
    "record",
    "register_model",
]
