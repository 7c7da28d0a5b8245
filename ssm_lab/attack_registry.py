"""Every attack by name, without importing torch: where its class lives and the entries it adds to the app's menu."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AttackEntry:
    """One attack. Its class (in `ssm_lab.attacks`) states its parameters, norms and modes; this entry states the
    rest, so the CLI and the app can list attacks before torch is loaded (the app's first page, `--help`)."""

    name: str  # the engine's name: make_attack(name, ...), `ssm-lab evaluate --attack name`
    home: str  # "module.Class" inside ssm_lab.attacks
    menu: dict[str, dict] = field(default_factory=dict)  # app menu label -> settings fixed by choosing it
    targeted: bool = False  # has a targeted mode (its class's `supports_targeted`; a test keeps the two equal)


NORMS = ("Linf", "L2")  # every attack states the subset it supports
AUTOATTACK_VERSIONS = ("standard", "plus", "rand")  # pyautoattack's named versions ('custom' takes sub-attacks)

# Adding an attack: one file in ssm_lab/attacks/ and one entry here. The order is the menu's and the CLI's.
REGISTRY: tuple[AttackEntry, ...] = (
    AttackEntry("fgsm", "fgsm.FGSM", {"FGSM": {"norm": "Linf"}}, targeted=True),
    AttackEntry("pgd", "pgd.PGD", {"PGD (Linf)": {"norm": "Linf"}, "PGD (L2)": {"norm": "L2"}}, targeted=True),
    AttackEntry("apgd-ce", "apgd.APGDCE", {"APGD-CE": {"norm": "Linf"}}),
    AttackEntry("apgd-t", "apgd.APGDT", {"APGD-T": {"norm": "Linf"}}),
    AttackEntry("fab-t", "fab.FABT", {"FAB-T": {"norm": "Linf"}}),
    AttackEntry("square", "square.Square", {"Square": {"norm": "Linf"}}),
    AttackEntry("cw-l2", "cw.CWL2", {"CW (L2)": {"norm": "L2"}}, targeted=True),
    AttackEntry("deepfool", "deepfool.DeepFool", {"DeepFool (L2)": {"norm": "L2"}}),
    AttackEntry("autoattack", "autoattack.AutoAttack",
                {f"AutoAttack ({version})": {"norm": "Linf", "version": version}
                 for version in AUTOATTACK_VERSIONS}),
)
ATTACK_NAMES: tuple[str, ...] = tuple(entry.name for entry in REGISTRY)
# the app's menu: label -> (engine name, fixed settings); the user-facing knobs are passed only where accepted
ATTACK_MENU: dict[str, tuple[str, dict]] = {label: (entry.name, fixed) for entry in REGISTRY
                                            for label, fixed in entry.menu.items()}
TARGETED_MENU: tuple[str, ...] = tuple(label for entry in REGISTRY if entry.targeted for label in entry.menu)


def unknown_attack(name: str) -> str:
    """The message for a name that is not in the registry."""
    return f"unknown attack {name!r}; known: {', '.join(ATTACK_NAMES)}"
