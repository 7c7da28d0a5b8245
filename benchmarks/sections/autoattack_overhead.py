"""Section 6: AutoAttack through our engine vs pyautoattack called directly on the same images and model."""
from __future__ import annotations

import logging

import torch

from ssm_lab.attacks import make_attack

from ..harness import measure
from ..results import Row, Target, memory_text
from .common import Settings, Stopwatch, mnist_batch, new_section, shipped_s4

KEY = "autoattack"
TITLE = "AutoAttack through our engine vs pyautoattack called directly"
EPS = 0.3
OVERHEAD_TARGET = 1.05


def _plan(settings: Settings) -> dict:
    if settings.quick:  # one cheap sub-attack keeps the smoke test fast
        return {"version": "custom", "sub_attacks": ["apgd-ce"]}
    return {"version": "standard", "sub_attacks": None}


def _direct(model, x, y, plan: dict, batch: int):
    from pyautoattack import AutoAttack

    def run_direct():
        with model.frozen():  # the model state our engine attacks in, so only the engines differ
            adversary = AutoAttack(model, attacks=plan["sub_attacks"], device="cpu", eps=EPS, norm="Linf", seed=0,
                                   version=plan["version"])
            adversary.run_standard_evaluation(x, y, batch_size=batch)
    return run_direct


def run(settings: Settings):
    section = new_section(KEY, TITLE, settings)
    n = 2 if settings.quick else 10
    plan = _plan(settings)
    logger = logging.getLogger("auto-attack")
    level = logger.level
    logger.setLevel(logging.WARNING)  # the direct run would otherwise log its progress
    try:
        _measure(section, settings, plan, n)
    finally:
        logger.setLevel(level)
    return section


def _measure(section, settings: Settings, plan: dict, n: int) -> None:
    with Stopwatch(section):
        model, model_text = shipped_s4(settings)
        x, y, data_text = mnist_batch(n, settings, model)
        params = dict(eps=EPS, version=plan["version"], seed=0, batch_size=n)
        if plan["sub_attacks"]:
            params["sub_attacks"] = plan["sub_attacks"]
        ours = make_attack("autoattack", model, **params)
        outcomes = []  # what happened, for the notes
        repeats = settings.repeats(3, 1)
        # the first run of ours warms both engines up (they share the model and pyautoattack's code)
        t_ours = section.add_timing("ours", measure(lambda: outcomes.append(ours.run(x, y)), repeats,
                                                    warmup=0 if settings.quick else 1))
        t_direct = section.add_timing("direct", measure(_direct(model, x, y, plan, n), repeats, warmup=0))
        outcome = outcomes[0]
        section.rows.append(Row(
            key="overhead", what=f"AutoAttack {plan['version']}, {n} images, eps={EPS}", unit="s",
            ours=t_ours.median, peer=t_direct.median, peer_name="pyautoattack run_standard_evaluation",
            ratio_kind="overhead", targets=[Target("ratio", "<=", OVERHEAD_TARGET)], repeats=f"{repeats} each",
            memory=memory_text(ours=t_ours.peak_rss_mb, peer=t_direct.peak_rss_mb)))
    accuracy = outcome.details.get("robust_accuracy_after", {})
    section.notes += [
        f"Model: {model_text}. Data: {data_text}.",
        f"Ours: `make_attack('autoattack', model, {', '.join(f'{k}={v!r}' for k, v in params.items())}).run(x, y)`; "
        "peer: `pyautoattack.AutoAttack(model, attacks=..., device='cpu', eps=..., norm='Linf', seed=0, "
        f"version={plan['version']!r}).run_standard_evaluation(x, y, batch_size={n})` inside `model.frozen()`, "
        "so both attack the same frozen model and only the engines differ. Both are timed end to end; an "
        "untimed first run of ours is the warm-up for both (none in quick mode).",
        "What our engine adds: a probe forward, one clean pass, one `run_standard_evaluation` call per "
        "sub-attack (each repeats pyautoattack's clean-accuracy pass and checks on the points still robust; this "
        "is what lets progress, cancel and resume work), the final projection and evaluation.",
        f"Accuracy after each sub-attack (our run): {accuracy}. Work depends on how many points survive each "
        "sub-attack, so the ratio belongs to this model and these images.",
        f"Target from the issue: overhead at most {OVERHEAD_TARGET - 1:.0%} (ratio ours / peer <= "
        f"{OVERHEAD_TARGET}).",
    ]
    if settings.quick:
        section.notes.append("Quick mode runs version='custom' with APGD-CE only, on a tiny random model.")
