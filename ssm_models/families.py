"""The registered architectures: importing the family modules here runs their @register_model decorators."""
from __future__ import annotations

from typing import Callable

from torch import nn

from . import dss, mamba, mega, s4, s5  # noqa: F401
from .registry import BLOCKS, DEFAULTS


def list_models() -> list[str]:
    return sorted(BLOCKS)


def block_factory(name: str) -> Callable[..., nn.Module]:
    return BLOCKS[name]


def arch_defaults(name: str) -> dict:
    return dict(DEFAULTS.get(name, {}))
