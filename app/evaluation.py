"""Evaluate tab: robust accuracy on n test images (with a confusion matrix) and accuracy-vs-eps curves."""
from __future__ import annotations

import json

from ssm_lab.datasets.info import DATASETS as INFO
from ssm_lab.eps import eps_label
from ssm_models.atomic import atomic_write

from . import opening
from .attack_menu import ATTACK_MENU, LINF_ATTACKS, default_eps
from .common import cancellable, holding, new_run_dir, progress_callback, public_model_info, user_errors
from .compare import check_fits, chosen_models, sample_test_images, spec_cost, spec_for
from .handlers import dataset_of
from .limits import LimitError, check_passes, parse_eps, parse_eps_list
from .models import MODELS
from .request_types import CurvesRequest, EvaluateRequest
from .result_types import CurvesResult, EvaluateResult, EvaluationDefaults

# default eps grids of the accuracy-vs-eps plot, up to about the dataset's threat model and past it; by menu name
CURVE_EPS = {INFO[name].display_name: grid for name, grid in
             {"mnist": "0, 0.05, 0.1, 0.2, 0.3", "cifar10": "0, 2/255, 4/255, 8/255, 16/255"}.items()}


@user_errors
def evaluation_defaults(model_name: str) -> EvaluationDefaults:
    """The test set and the budgets that suit a model: its dataset, its threat model's eps and an eps grid up to
    about it (0.3 means nothing on CIFAR-10, 8/255 little on MNIST)."""
    model = MODELS.get(model_name)
    dataset = dataset_of(model)
    return EvaluationDefaults(dataset=dataset, eps=eps_label(default_eps(model), approx=False),
                              curve_eps=CURVE_EPS.get(dataset, CURVE_EPS[opening.DATASET]))


def _pct(entry: dict) -> str:
    lo, hi = entry["ci95"]
    return f"{entry['accuracy']:.1%} ({entry['correct']}/{entry['n']}; 95% CI {lo:.1%}-{hi:.1%})"


def report_markdown(report: dict, model_name: str) -> str:
    from ssm_lab.evaluate import attack_label

    tm = report["threat_model"]
    lines = [f"**{model_name}** on {report['n']} test images ({report['data'].get('source', '')}), "
             f"{tm['norm']} eps = {tm['eps_label']}, seed {report['seed']}, {report['seconds']} s",
             "", "| | robust accuracy |", "|---|---|", f"| clean | {_pct(report['clean'])} |"]
    for entry in report["attacks"]:
        lines.append(f"| {attack_label(entry)} | {_pct(entry)} |")
    if report.get("worst_case"):
        lines.append(f"| worst case over the attacks | {_pct(report['worst_case'])} |")
    flags = sorted({f for entry in report["attacks"] for f in entry.get("flags", [])})
    if flags:
        lines += ["", "Flags: " + "; ".join(flags)]
    return "\n".join(lines)


@user_errors
def evaluate_model(request: EvaluateRequest, progress=None, session=None) -> EvaluateResult:
    """Clean and robust accuracy with Wilson intervals; confusion matrix of the last attack; JSON report file."""
    from ssm_lab import plots
    from ssm_lab.evaluate import evaluate

    model_name = request.model
    model = MODELS.get(model_name)
    attacks = [a for a in (request.attacks or []) if a]
    if not attacks:
        raise LimitError("choose at least one attack")
    unknown = [a for a in attacks if a not in ATTACK_MENU]
    if unknown:
        raise LimitError(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACK_MENU)}")
    norms = {ATTACK_MENU[a][1]["norm"] for a in attacks}
    if len(norms) > 1:
        raise LimitError("one evaluation uses one threat model: evaluate Linf and L2 attacks separately")
    x, y, info, ds = sample_test_images(request.dataset, request.n, request.seed)
    check_fits({model_name: model}, x, ds.classes)
    specs, total = [], {"forward": 0, "backward": 0}
    for attack in attacks:
        spec, eps_value, seed_value = spec_for(attack, model, request, eps=request.eps)
        spec.pop("norm")
        cost = spec_cost(spec, model, eps_value, len(x))
        total = {k: total[k] + cost[k] for k in total}
        specs.append(spec)
    check_passes(total, f"{len(specs)} attack(s) on {len(x)} images")
    with cancellable("evaluate", session) as cancel, holding([model]):
        report = evaluate(model, x, y, specs, eps=eps_value, norm=norms.pop(), seed=seed_value,
                          progress=progress_callback(progress), cancel=cancel, data_info=info)
    report["checkpoint"] = model_name
    report["model"] = public_model_info(report["model"], model_name)
    if str((report.get("model_info") or {}).get("name", "")).startswith("/"):  # no server paths in reports
        report["model_info"]["name"] = model_name
    last = report["attacks"][-1]
    predictions = [p for p in last.get("predictions", []) if p is not None]
    truth = [int(t) for t, p in zip(y.tolist(), last.get("predictions", [])) if p is not None]
    figure = plots.confusion_figure(truth, predictions, ds.classes) if predictions else None
    if figure is not None:
        figure.update_layout(title=f"Predictions under {last['attack']} (rows: true class), n={len(truth)}")
    path = new_run_dir() / "evaluation.json"
    atomic_write(path, json.dumps(report, indent=1))
    return EvaluateResult(text=report_markdown(report, model_name), confusion=figure, report_file=str(path),
                          report=_compact(report))


def _compact(report: dict) -> dict:
    """The report without per-point lists, for the JSON panel (the file keeps everything)."""
    out = dict(report)
    out["attacks"] = [{k: v for k, v in a.items() if k != "predictions"} for a in report["attacks"]]
    return out


@user_errors
def eps_curves(request: CurvesRequest, progress=None, session=None) -> CurvesResult:
    """Robust accuracy against one Linf attack over several eps values, one curve per model, same images."""
    from ssm_lab import plots
    from ssm_lab.evaluate import eps_curve

    if ATTACK_MENU.get(request.attack, ("", {}))[1].get("norm") != "Linf":
        raise LimitError(f"accuracy-vs-eps curves use Linf attacks; choose one of {', '.join(LINF_ATTACKS)}")
    models = chosen_models(request.models)
    values = parse_eps_list(request.eps_values)
    x, y, info, ds = sample_test_images(request.dataset, request.n, request.seed)
    check_fits(models, x, ds.classes)
    first = next(iter(models.values()))
    spec, _, seed_value = spec_for(request.attack, first, request,
                                   eps=max(values) if max(values) > 0 else parse_eps("0.1"))
    spec.pop("norm")
    total = {"forward": 0, "backward": 0}
    for model in models.values():
        for value in values:
            if value > 0:
                cost = spec_cost(spec, model, value, len(x))
                total = {k: total[k] + cost[k] for k in total}
    check_passes(total, f"{len(values)} eps values x {len(models)} models on {len(x)} images")
    with cancellable("evaluate", session) as cancel, holding(models.values()):
        curves = eps_curve(models, x, y, values, spec, seed=seed_value, progress=progress_callback(progress),
                           cancel=cancel)
    for rows in curves["curves"].values():
        for row in rows:
            row.pop("predictions", None)  # per-point lists belong in evaluation reports, not in a curve
    curves["data"] = info
    return CurvesResult(figure=plots.eps_curve_figure(curves), curves=curves)
