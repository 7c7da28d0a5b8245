"""Architecture registry: one decorated block factory per family, as in timm (lookups live in families.py)."""
from __future__ import annotations

from typing import Callable

from torch import nn

BLOCKS: dict[str, Callable[..., nn.Module]] = {}
DEFAULTS: dict[str, dict] = {}


def register_model(name: str, **defaults):
    """Register `fn(config, layer_idx) -> nn.Module` (a sequence block, (B, L, H) -> (B, L, H))."""

    def wrap(fn):
        if name in BLOCKS:
            raise ValueError(f"architecture {name!r} is already registered")
        BLOCKS[name] = fn
        DEFAULTS[name] = defaults
        return fn

    return wrap
