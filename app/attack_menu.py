"""The attack menu of the app and the translation of its knobs into engine parameters, after the server's caps."""
from __future__ import annotations

from ssm_lab.attack_registry import ATTACK_MENU, TARGETED_MENU
from ssm_lab.eps import grey_levels

from .limits import LIMITS, LimitError, as_float, as_int, parse_eps

LINF_ATTACKS = [label for label, (_, fixed) in ATTACK_MENU.items() if fixed["norm"] == "Linf"]
QUERIES_PER_STEP = 25  # Square is gradient-free: the steps knob buys 25 queries per step
NO_TARGET = ("", "none", "untargeted")
# 'target class (FGSM, PGD, CW)': the menu's targeted attacks by the first word of their labels
TARGET_LABEL = f"target class ({', '.join(dict.fromkeys(label.split()[0] for label in TARGETED_MENU))})"


def norm_of(attack: str) -> str:
    if attack not in ATTACK_MENU:
        raise LimitError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACK_MENU)}")
    return ATTACK_MENU[attack][1]["norm"]


def attack_settings(attack: str, model, *, eps, steps, step_size=None, restarts=1, target=None,
                    seed=0) -> tuple[str, dict]:
    """The engine name and the keyword arguments for make_attack."""
    from ssm_lab.attacks import attack_params

    norm = norm_of(attack)
    name, fixed = ATTACK_MENU[attack]
    accepted = attack_params(name)
    params = dict(fixed)
    params["eps"] = as_float("eps", parse_eps(eps), 0.0, 64.0 if norm == "L2" else 1.0)
    params["seed"] = as_int("seed", seed, 0, 2**31 - 1)
    if "steps" in accepted:
        params["steps"] = as_int("steps", steps, 1, LIMITS.steps, "SSM_LAB_MAX_STEPS")
    if "queries" in accepted:
        params["queries"] = as_int("steps", steps, 1, LIMITS.steps, "SSM_LAB_MAX_STEPS") * QUERIES_PER_STEP
    if "restarts" in accepted:
        params["restarts"] = as_int("restarts", restarts, 1, LIMITS.restarts, "SSM_LAB_MAX_RESTARTS")
    if "step_size" in accepted and step_size not in (None, ""):
        step = as_float("step size", step_size, 0.0, 64.0)
        if step != 0:  # 0 asks for the attack's default step
            params["step_size"] = step
    if target is not None and str(target).strip().lower() not in NO_TARGET:
        if "target" not in accepted:
            raise LimitError(f"{attack} has no targeted mode here; set the target class to 'none', or choose "
                             f"{', '.join(TARGETED_MENU)} for a targeted attack")
        classes = class_list(model)
        index = classes.index(str(target)) if str(target) in classes else \
            as_int("target class", target, 0, model.config.num_classes - 1)
        params.update(targeted=True, target=index)
    return name, params


def class_list(model) -> list[str]:
    """Class names of the model's dataset (digits for MNIST, CIFAR-10 names), else '0', '1', ..."""
    from ssm_lab.data import model_classes

    return model_classes(model)


def default_eps(model) -> float:
    """The model's own threat model, else its dataset's usual budget (0.3 for MNIST, 8/255 for CIFAR-10)."""
    from ssm_lab.threat import model_threat

    return model_threat(model)[0]


def eps_text(eps) -> str:
    """'0.3' -> 'eps = 0.3 = 76.5/255', so both conventions are visible next to the eps box."""
    try:
        value = parse_eps(eps)
    except LimitError as exc:
        return f"eps: {exc}"
    return f"eps = {value:.6g} = {grey_levels(value)}"
