"""Adversarial attacks on [0, 1] images: small attack classes sharing one `Attack` base, listed in attack_registry."""
from __future__ import annotations

import importlib
import inspect

from ..attack_registry import REGISTRY, unknown_attack
from .base import (
    DEFAULT_EPS,
    MAX_BATCH,
    MAX_IMAGE_NUMEL,
    MAX_IMAGES,
    MAX_QUERIES,
    MAX_RESTARTS,
    MAX_STEPS,
    MAX_TARGETS,
    Attack,
    AttackParamError,
    AttackResult,
    inside_ball,
)


def _attack_class(home: str) -> type[Attack]:
    module, name = home.rsplit(".", 1)
    return getattr(importlib.import_module(f".{module}", __name__), name)


ATTACKS: dict[str, type[Attack]] = {entry.name: _attack_class(entry.home) for entry in REGISTRY}


def attack_params(name: str) -> dict:
    """Parameters an attack takes, with their defaults (`eps=None` means DEFAULT_EPS of the norm)."""
    cls = _lookup(name)
    signature = inspect.signature(cls.__init__)
    return {p: v.default for p, v in signature.parameters.items() if p not in ("self", "model")}


def make_attack(name: str, model, **params) -> Attack:
    """`make_attack('pgd', model, eps=8/255, steps=10)`; a parameter the attack does not take is an error."""
    cls = _lookup(name)
    if not cls.supports_targeted:
        # callers may pass the targeting keys to every attack; only asking for a target is an error here
        if params.get("targeted") or params.get("target") is not None:
            raise AttackParamError(f"{name} has no targeted mode")
        params = {k: v for k, v in params.items() if k not in ("targeted", "target")}
    accepted = attack_params(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise AttackParamError(f"{name} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}")
    return cls(model, **params)


def list_attacks() -> dict[str, dict]:
    """Per attack: summary, norms, whether it has a targeted mode, is randomised, traces every iteration, params."""
    return {name: {"summary": cls.summary_text, "norms": list(cls.norms), "targeted": cls.supports_targeted,
                   "randomised": cls.randomised, "traces_iterations": cls.owns_loop,
                   "params": attack_params(name), "default_eps": dict(DEFAULT_EPS)}
            for name, cls in ATTACKS.items()}


def default_norm(name: str) -> str:
    """Linf where the attack has it, else its one norm (the minimum-norm attacks CW and DeepFool are L2 only)."""
    norms = _lookup(name).norms
    return "Linf" if "Linf" in norms else norms[0]


def targeted_attacks() -> list[str]:
    return [name for name, cls in ATTACKS.items() if cls.supports_targeted]


def _lookup(name: str) -> type[Attack]:
    if name not in ATTACKS:
        raise AttackParamError(unknown_attack(name))
    return ATTACKS[name]


__all__ = ["ATTACKS", "Attack", "AttackParamError", "AttackResult", "DEFAULT_EPS", "MAX_BATCH", "MAX_IMAGES",
           "MAX_IMAGE_NUMEL", "MAX_QUERIES", "MAX_RESTARTS", "MAX_STEPS", "MAX_TARGETS", "attack_params",
           "default_norm", "inside_ball", "list_attacks", "make_attack", "targeted_attacks"]
