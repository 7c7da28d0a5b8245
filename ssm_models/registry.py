"""Architecture registry: one decorated block factory per family, as in timm."""
from __future__ import annotations

from typing import Callable

from torch import nn

_BLOCKS: dict[str, Callable[..., nn.Module]] = {}
_DEFAULTS: dict[str, dict] = {}


def register_model(name: str, **defaults):
    """Register `fn(config, layer_idx) -> nn.Module` (a sequence block, (B, L, H) -> (B, L, H))."""

    def wrap(fn):
        if name in _BLOCKS:
            raise ValueError(f"architecture {name!r} is already registered")
        _BLOCKS[name] = fn
        _DEFAULTS[name] = defaults
        return fn

    return wrap


def _ensure_loaded() -> None:
    # importing the family modules runs their @register_model decorators
    from . import dss, mamba, mega, s4, s5  # noqa: F401


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_BLOCKS)


def block_factory(name: str) -> Callable[..., nn.Module]:
    _ensure_loaded()
    return _BLOCKS[name]


def arch_defaults(name: str) -> dict:
    _ensure_loaded()
    return dict(_DEFAULTS.get(name, {}))


def create_model(name: str, **config):
    """Build a classifier: `create_model('s4', d_model=64, n_layers=2)`."""
    from .classifier import SSMClassifier
    from .config import ModelConfig

    _ensure_loaded()
    if name not in _BLOCKS:
        from .config import ConfigError

        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(sorted(_BLOCKS))}")
    merged = {**arch_defaults(name), **config, "arch": name}
    return SSMClassifier(ModelConfig.from_dict(merged))
