"""Attack-tab actions as plain functions (testable without a browser): models, image preview, cost, attack."""
from __future__ import annotations

import threading
import time
import weakref

import numpy as np

from ssm_lab.catalogue import catalogue_rows
from ssm_lab.eps import eps_label, grey_levels

from . import inputs, opening
from .attack_menu import attack_settings, class_list, default_eps
from .common import cancellable, holding, new_run_dir, progress_callback, public_model_info, user_errors
from .learn import ads_pair
from .limits import LIMITS, LimitError, check_passes
from .models import (
    MODELS,
    card_markdown,
    catalogue,
    default_checkpoint,
    resolve_source,
    training_curves,
)
from .request_types import AttackChoice, AttackRequest, CostRequest, ImageChoice, PreviewRequest
from .result_types import AttackResult, ModelSelection, Preview

PREVIEW_SIDE = inputs.PREVIEW_SIDE
# set by the first page (or API client) to ask for the start-up data: its own requests now load the preselected
# model, so the background warm-up (app/__main__.py) stays out of their way
CLIENT_ARRIVED = threading.Event()


def startup() -> dict:
    """What the page needs first: the model menu with a preselected checkpoint, and the checkpoint table."""
    CLIENT_ARRIVED.set()
    entries = catalogue()
    headers, rows = catalogue_rows(entries)
    value = default_checkpoint(entries)
    dataset = next((e["dataset"] for e in entries if e["name"] == value), None)
    # models to compare by default: the preselected one and the next of the same dataset (ideally its AdS twin)
    group = ads_pair(entries, dataset) if dataset else []
    return {"choices": [(e["label"], e["name"]) for e in entries], "value": value, "group": group,
            "table": {"headers": headers, "data": rows}, "entries": entries}


@user_errors
def select_model(model_name: str) -> ModelSelection:
    """Load (or take from the LRU) a model: its card, its default eps, its classes (for the target menu), the
    test set that matches it, and its training curves when they were shipped with it."""
    from ssm_lab.plots import training_curves_figure

    model = MODELS.get(model_name)
    curves = training_curves(model_name)
    figure = training_curves_figure(curves, f"Training curves of {model_name}") if curves else None
    return ModelSelection(card=card_markdown(model, model_name), eps=eps_label(default_eps(model), approx=False),
                          classes=["none"] + class_list(model), dataset=dataset_of(model), curves=figure)


@user_errors
def load_hub_model(repo_id: str, revision: str = "") -> str:
    """Download and check a Hub checkpoint; returns the menu value (`org/name` or `org/name@revision`)."""
    repo_id, revision = (repo_id or "").strip(), (revision or "").strip()
    if not repo_id:
        raise LimitError("enter a Hub repo id such as org/name")
    name = f"{repo_id}@{revision}" if revision and "@" not in repo_id else repo_id
    resolve_source(name)  # a shipped name is fine too: it is simply selected
    MODELS.get(name)
    return name


def dataset_of(model) -> str:
    """The menu name of a model's dataset (MNIST when unknown), to preselect matching test images."""
    key = (model.config.meta or {}).get("dataset")
    return next((label for label, value in inputs.DATASETS.items() if value == key), opening.DATASET)


def model_x(model, image: ImageChoice):
    """(1, C, S, S) float input in [0, 1] for this model, the label when known, and a description."""
    from ssm_lab.images import to_tensor

    cfg = model.config
    arr, label, text = inputs.model_input(image.source, cfg.in_channels, cfg.image_size, dataset=image.dataset,
                                          index=image.index, upload=image.upload, sketch=image.sketch, fit=image.fit,
                                          model_dataset=(cfg.meta or {}).get("dataset"))
    return to_tensor(arr), label, text


@user_errors
def preview(request: PreviewRequest) -> Preview:
    """Exactly what the model sees (after framing, resizing and channel conversion), enlarged, and where it came
    from."""
    model = MODELS.get(request.model)
    x, label, text = model_x(model, request)
    cfg = model.config
    # without a true class, `text` already says the attack works against the model's clean prediction
    label_text = f"; true class **{class_list(model)[label]}**" if label is not None else ""
    return Preview(image=inputs.display(x), note=f"{text}. Shown as the model sees it ({cfg.in_channels}x"
                                                 f"{cfg.image_size}x{cfg.image_size}, enlarged without smoothing)"
                                                 f"{label_text}.")


@user_errors
def pick_random(dataset: str, class_name: str = "any") -> int:
    return inputs.random_index(dataset, class_name)


@user_errors
def pick_class(dataset: str, class_name: str = "any") -> int:
    return inputs.first_of_class(dataset, class_name)


# keyed by the model itself, weakly: an entry goes with its model when the LRU drops it (an id could be reused)
_SPEED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def seconds_per_pass(model) -> float:
    """Measured seconds of one image's forward+backward pass (once per loaded model), to turn costs into time."""
    import torch

    if model not in _SPEED:
        cfg = model.config
        # own generator: the global stream may be seeded by a library attack running in another request
        x = torch.rand(4, cfg.in_channels, cfg.image_size, cfg.image_size, requires_grad=True,
                       generator=torch.Generator().manual_seed(0))  # (4, C, S, S)
        with holding([model]), model.frozen():
            model(x).sum().backward()  # warm-up: kernels are cached in attack mode
            start = time.perf_counter()
            model(x).sum().backward()
            _SPEED[model] = (time.perf_counter() - start) / len(x)
    return _SPEED[model]


def cost_text(cost: dict, model, what: str = "1 image") -> str:
    passes = cost["forward"] + cost["backward"]
    seconds = passes * seconds_per_pass(model) / 2  # a forward alone costs about a third of forward+backward
    return (f"**Cost before running** ({what}, upper bound): {cost['forward']:,} forward + {cost['backward']:,} "
            f"backward passes, roughly {max(seconds, 0.01):.2g} s here; this server allows {LIMITS.passes:,} passes "
            f"per request. {cost['description']}")


def engine_settings(choice: AttackChoice, model) -> tuple[str, dict]:
    """The engine name and make_attack keyword arguments of the attack tab's knobs, after the server's caps."""
    return attack_settings(choice.attack, model, eps=choice.eps, steps=choice.steps, step_size=choice.step_size,
                           restarts=choice.restarts, target=choice.target, seed=choice.seed)


@user_errors
def estimate_cost(request: CostRequest) -> str:
    from ssm_lab.attacks import make_attack

    model = MODELS.get(request.model)
    name, params = engine_settings(request, model)
    cost = make_attack(name, model, **params).cost(1, trace=True)
    check_passes(cost, request.attack)
    return cost_text(cost, model)


def stop_line(res: dict, params: dict) -> str:
    """Where PGD stopped: it returns each image's first successful iterate, so a short, flat trace is expected."""
    from ssm_lab.single import first_success

    steps, restarts = params["steps"], params.get("restarts", 1)
    hit = first_success(res["trace"], res["label"], params.get("target") if params.get("targeted") else None)
    if hit is None:
        return f"- iterations: all {steps} steps" + (f" in each of {restarts} restarts" if restarts > 1 else "")
    restart, step = hit
    where = "the random start (iterate 0)" if step == 0 and params.get("random_start", True) else f"iterate {step}"
    return (f"- iterations: fooled at {where} of {steps}" + (f", restart {restart + 1}" if restarts > 1 else "")
            + "; PGD returns that first successful point, so the attack trace ends there")


def summary_markdown(res: dict, classes: list[str], params: dict, attack: str, attack_id: str = "") -> str:
    def name(i: int) -> str:
        return classes[i] if 0 <= i < len(classes) else str(i)

    verdict = "**the attack succeeded**" if res["success"] else "**the attack failed** (the model resisted)"
    if res["cancelled"]:
        verdict += "; cancelled: showing the best point found before the cancel"
    png = ("n/a: the attack did not succeed" if res["survives_png"] is None else
           "yes: saved as an 8-bit PNG it still fools the model" if res["survives_png"] else
           f"no: rounded to 8 bits the model predicts **{name(res['pred_png'])}**")
    if res["label_given"] and res["pred_clean"] != res["label"]:
        verdict += "; note: the clean image was already misclassified"
    lines = [f"{attack}: {verdict}",
             f"- label **{name(res['label'])}** ({'given' if res['label_given'] else 'the clean prediction'})",
             f"- clean prediction **{name(res['pred_clean'])}** ({res['p_clean'].max():.1%})",
             f"- adversarial prediction **{name(res['pred_adv'])}** ({res['p_adv'].max():.1%})",
             f"- perturbation: Linf {res['linf']:.4f} ({grey_levels(res['linf'], '.1f')}), L2 {res['l2']:.4f}; budget "
             f"{params['norm']} eps = {eps_label(params['eps'])}",
             f"- survives 8-bit PNG: {png}",
             f"- {res['seconds']:.2f} s, seed {params['seed']}"]
    if attack_id == "pgd" and res["trace"] and not res["cancelled"]:
        lines.insert(-1, stop_line(res, params))
    if res["flags"]:
        lines.append("- flags: " + "; ".join(res["flags"]))
    return "\n".join(lines)


def perturbation_image(delta) -> np.ndarray:
    """Signed perturbation, amplified to full range (red brighter, blue darker), enlarged like the previews."""
    from ssm_lab.images import perturbation_display

    return perturbation_display(delta[0], scale=max(1, PREVIEW_SIDE // delta.shape[-1]))


@user_errors
def run_attack(request: AttackRequest, progress=None, session=None) -> AttackResult:
    """Attack one image: clean, adversarial and perturbation images, a summary, four figures (top-k, trace, error
    scaling, error along the sequence), the download paths and the run card. `session` (gradio's request) scopes
    the cancel button."""
    from ssm_lab import plots
    from ssm_lab.analysis import error_scaling
    from ssm_lab.attacks import make_attack
    from ssm_lab.single import attack_single, run_card, save_artefacts

    model = MODELS.get(request.model)
    x, label, text = model_x(model, request)
    name, params = engine_settings(request, model)
    planned = make_attack(name, model, **params)
    check_passes(planned.cost(1, trace=True), request.attack)
    seed_value = params.pop("seed")
    with cancellable("attack", session) as cancel, holding([model]):
        res = attack_single(model, x, label, name, seed=seed_value, progress=progress_callback(progress),
                            cancel=cancel, **params)
        analysis = error_scaling(model, x, res["adv"])
    classes = class_list(model)
    card = run_card(model, res, name, params, seed_value, request.model, classes)
    card["input"] = text
    card["model"] = public_model_info(card["model"], request.model)
    paths = save_artefacts(res, card, new_run_dir())
    params["seed"] = seed_value
    return AttackResult(
        clean=inputs.display(x), adversarial=inputs.display(res["adv"]), perturbation=perturbation_image(res["delta"]),
        summary=summary_markdown(res, classes, params, request.attack, name),
        topk=plots.topk_figure(classes, res["p_clean"], res["p_adv"]),
        trace=plots.trace_figure(res["trace"], params.get("steps"), planned.owns_loop),
        scaling=plots.error_scaling_figure(analysis, "Error scaling for this image"),
        tokens=plots.token_error_figure(analysis["token_error_maps"], model.config.image_size),
        files=[str(paths["png"]), str(paths["npy"]), str(paths["card"])], card=card)
