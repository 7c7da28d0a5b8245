"""Adversarial attacks on [0, 1] images: a registry of small attack classes sharing one `Attack` base class."""
from __future__ import annotations

import inspect

from .apgd import APGDCE, APGDT
from .autoattack import AutoAttack
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
from .cw import CWL2
from .deepfool import DeepFool
from .fab import FABT
from .fgsm import FGSM
from .pgd import PGD
from .square import Square

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in
                                    (FGSM, PGD, APGDCE, APGDT, FABT, Square, CWL2, DeepFool, AutoAttack)}


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


def _lookup(name: str) -> type[Attack]:
    if name not in ATTACKS:
        raise AttackParamError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    return ATTACKS[name]


__all__ = ["ATTACKS", "APGDCE", "APGDT", "Attack", "AttackParamError", "AttackResult", "AutoAttack", "CWL2",
           "DEFAULT_EPS", "DeepFool", "FABT", "FGSM", "MAX_BATCH", "MAX_IMAGES", "MAX_IMAGE_NUMEL", "MAX_QUERIES",
           "MAX_RESTARTS", "MAX_STEPS", "MAX_TARGETS", "PGD", "Square", "attack_params", "inside_ball",
           "list_attacks", "make_attack"]
