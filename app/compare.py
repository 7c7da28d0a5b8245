"""Compare tab: one image and attack on several models side by side, and the transfer matrix between models."""
from __future__ import annotations

from .attack_menu import attack_settings, class_list
from .common import cancellable, holding, progress_callback, user_errors
from .handlers import engine_settings, model_x, perturbation_image
from .inputs import DATASETS, display, load_test_split
from .limits import LIMITS, LimitError, as_int, check_passes
from .models import MODELS
from .request_types import CompareRequest, TestSetChoice, TransferRequest
from .result_types import CompareResult, TransferResult


def chosen_models(names, limit: int | None = None) -> dict:
    limit = limit or LIMITS.compare_models
    names = [n for n in (names or []) if n]
    if not names:
        raise LimitError("choose at least one model to compare")
    if len(names) > limit:
        raise LimitError(f"{len(names)} models is above the limit of {limit} (server cap SSM_LAB_MAX_COMPARE_MODELS)")
    return {name: MODELS.get(name) for name in dict.fromkeys(names)}


@user_errors
def compare_models(request: CompareRequest, progress=None, session=None) -> CompareResult:
    """Same image and attack on each model: gallery (adversarial + perturbation), table, error-scaling bars."""
    from ssm_lab import plots
    from ssm_lab.analysis import error_scaling
    from ssm_lab.attacks import make_attack
    from ssm_lab.single import attack_single

    models = chosen_models(request.models)
    jobs, total = [], 0
    for name, model in models.items():
        engine, params = engine_settings(request, model)
        total += sum(make_attack(engine, model, **params).cost(1, trace=True)[k] for k in ("forward", "backward"))
        jobs.append((name, model, engine, params))
    check_passes({"forward": total}, f"{request.attack} on {len(jobs)} models")
    gallery, rows, analyses = [], [], {}
    report = progress_callback(progress)
    with cancellable("compare", session) as cancel:
        for i, (name, model, engine, params) in enumerate(jobs):
            if cancel.is_set():
                break
            x, label, _ = model_x(model, request)
            seed_value = params.pop("seed")

            def step(done: int, total: int, message: str, i=i, name=name) -> None:
                # one bar for the whole comparison: model i covers the i-th slice of it
                report(i * 1000 + int(1000 * done / max(total, 1)), 1000 * len(jobs), f"{name}: {message}")

            with holding([model]):
                res = attack_single(model, x, label, engine, seed=seed_value, progress=step, cancel=cancel, **params)
                analyses[name] = error_scaling(model, x, res["adv"])
            classes = class_list(model)
            verdict = "fooled" if res["success"] else "resisted"
            gallery.append((display(res["adv"]), f"{name}: {classes[res['pred_clean']]} -> "
                                                 f"{classes[res['pred_adv']]} ({verdict})"))
            gallery.append((perturbation_image(res["delta"]), f"{name}: perturbation (amplified)"))
            rows.append([name, classes[res["label"]], classes[res["pred_clean"]], round(float(res["p_clean"].max()), 4),
                         classes[res["pred_adv"]], round(float(res["p_adv"].max()), 4), bool(res["success"]),
                         res["survives_png"], round(res["linf"], 4), round(res["l2"], 4), res["seconds"]])
    headers = ["model", "label", "clean pred", "clean conf", "adv pred", "adv conf", "fooled", "survives PNG",
               "Linf", "L2", "seconds"]
    figure = plots.component_bars_figure(analyses, "mse") if analyses else None
    return CompareResult(gallery=gallery, table={"headers": headers, "data": rows}, scaling=figure)


def sample_test_images(dataset: str, n, seed):
    """A seeded, class-stratified sample of n test images: (x, y, provenance, dataset)."""
    from ssm_lab.data import sample_indices

    ds = load_test_split(dataset)
    count = as_int("n", n, 1, LIMITS.eval_n, "SSM_LAB_MAX_EVAL_N")
    seed_value = as_int("seed", seed, 0, 2**31 - 1)
    idx = sample_indices(ds, min(count, len(ds)), seed_value)
    x, y = ds.tensors(idx)  # (n, C, S, S), (n,)
    info = {"dataset": DATASETS.get(dataset, dataset), "split": "test", "source": ds.source, "n": len(y),
            "seed": seed_value, "indices": "stratified seeded sample"}
    return x, y, info, ds


def check_fits(models: dict, x, classes: list[str]) -> None:
    """Every model must take these images and predict these classes."""
    for name, model in models.items():
        cfg = model.config
        if (cfg.in_channels, cfg.image_size, cfg.image_size) != tuple(x.shape[1:]) or cfg.num_classes != len(classes):
            raise LimitError(f"{name} takes {cfg.in_channels}x{cfg.image_size}x{cfg.image_size} images with "
                             f"{cfg.num_classes} classes; the chosen test set has {tuple(x.shape[1:])} images with "
                             f"{len(classes)} classes: choose models of one dataset")


def spec_for(attack: str, model, test_set: TestSetChoice, *, eps) -> tuple[dict, float, int]:
    """The attack as an evaluate/transfer spec (name + settings), its eps and seed, after the caps."""
    engine, params = attack_settings(attack, model, eps=eps, steps=test_set.steps, step_size=None,
                                     restarts=test_set.restarts, target=None, seed=test_set.seed)
    eps_value, seed_value = params.pop("eps"), params.pop("seed")
    return {"name": engine, **params}, eps_value, seed_value


def spec_cost(spec: dict, model, eps: float, n: int) -> dict:
    from ssm_lab.attacks import make_attack

    params = {k: v for k, v in spec.items() if k != "name"}
    return make_attack(spec["name"], model, eps=eps, **params).cost(n)


@user_errors
def transfer(request: TransferRequest, progress=None, session=None) -> TransferResult:
    """Accuracy of each model (columns) on adversarial examples crafted on each model (rows)."""
    from ssm_lab import plots
    from ssm_lab.evaluate import transfer_matrix

    models = chosen_models(request.models)
    x, y, info, ds = sample_test_images(request.dataset, request.n, request.seed)
    check_fits(models, x, ds.classes)
    first = next(iter(models.values()))
    spec, eps_value, seed_value = spec_for(request.attack, first, request, eps=request.eps)
    total = {"forward": 0, "backward": 0}
    for model in models.values():
        cost = spec_cost(spec, model, eps_value, len(x))
        total["forward"] += cost["forward"] + len(x) * len(models)
        total["backward"] += cost["backward"]
    check_passes(total, f"the transfer matrix of {len(models)} models on {len(x)} images")
    with cancellable("compare", session) as cancel, holding(models.values()):
        result = transfer_matrix(models, x, y, spec, eps=eps_value, seed=seed_value,
                                 progress=progress_callback(progress), cancel=cancel)
    result["data"] = info
    return TransferResult(figure=plots.transfer_figure(result), result=result)
