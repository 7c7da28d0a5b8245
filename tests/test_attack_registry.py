"""The attack registry is the one list of attacks: the engine, the CLI's choices and the app's menu read it."""
from __future__ import annotations

import argparse

import pytest

from app import opening
from app.attack_menu import ATTACK_MENU, TARGET_LABEL
from ssm_lab.attack_registry import ATTACK_NAMES, REGISTRY
from ssm_lab.attacks import ATTACKS, attack_params, default_norm
from ssm_lab.cli import _attack_specs, build_parser


def _attack_option(command: str) -> argparse.Action:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    return next(a for a in commands[command]._actions if a.dest == "attack")


@pytest.mark.parametrize("entry", REGISTRY, ids=lambda e: e.name)
def test_every_registry_entry_names_a_class_that_carries_the_same_name(entry):
    assert ATTACKS[entry.name].name == entry.name


@pytest.mark.parametrize("entry", REGISTRY, ids=lambda e: e.name)
def test_every_registry_entry_states_the_targeted_mode_its_class_has(entry):
    assert entry.targeted == ATTACKS[entry.name].supports_targeted, entry.name


def test_the_target_class_label_names_the_targeted_attacks_of_the_menu():
    assert TARGET_LABEL == "target class (FGSM, PGD, CW)"


def test_the_engine_knows_exactly_the_registry_attacks_in_its_order():
    assert list(ATTACKS) == list(ATTACK_NAMES)


@pytest.mark.parametrize("command", ["evaluate", "attack"])
def test_the_cli_offers_the_registry_attacks_as_choices(command):
    assert list(_attack_option(command).choices) == list(ATTACK_NAMES)


def test_the_app_menu_offers_every_registry_attack():
    engines = {engine for engine, _ in ATTACK_MENU.values()}
    assert engines == set(ATTACK_NAMES)


@pytest.mark.parametrize("label", list(ATTACK_MENU))
def test_every_menu_entry_fixes_a_norm_its_attack_supports(label):
    engine, fixed = ATTACK_MENU[label]
    assert fixed["norm"] in ATTACKS[engine].norms, (label, fixed["norm"], ATTACKS[engine].norms)


@pytest.mark.parametrize("option, value", [("steps", 7), ("restarts", 3), ("step_size", 0.01)])
def test_evaluate_passes_an_option_to_exactly_the_attacks_that_take_it(option, value):
    args = build_parser().parse_args(["evaluate", "ck", f"--{option.replace('_', '-')}", str(value)])
    args.attack = list(ATTACK_NAMES)
    given = {spec["name"] for spec in _attack_specs(args) if option in spec}
    assert given == {name for name in ATTACK_NAMES if option in attack_params(name)}


def test_evaluate_asks_the_l2_only_attacks_for_their_norm_and_the_others_for_none():
    args = build_parser().parse_args(["evaluate", "ck"])
    args.attack = list(ATTACK_NAMES)
    norms = {spec["name"]: spec.get("norm") for spec in _attack_specs(args)}
    assert norms == {name: None if default_norm(name) == "Linf" else "L2" for name in ATTACK_NAMES}


def test_an_unknown_attack_is_refused_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "ck", "--attack", "telepathy"])
    assert "unknown attack 'telepathy'; known: fgsm, pgd" in capsys.readouterr().err


def test_the_apps_opening_attack_is_a_linf_entry_of_the_menu():
    assert ATTACK_MENU[opening.ATTACK][1]["norm"] == "Linf"
