"""Gradio's side of the handlers, the one place that maps: component values in (each parameter is named as the API
shows it), a request dataclass to the handler, the result dataclass back out as the list of output components."""
from __future__ import annotations

from dataclasses import fields

import gradio as gr

from . import compare as C
from . import evaluation as E
from . import handlers as H
from . import request_types as Q
from .result_types import outputs


def _ask(request_type, values: dict):
    """The request from an endpoint's arguments: its parameters carry the request's field names."""
    return request_type(**{f.name: values[f.name] for f in fields(request_type)})


def select_model(model, current_dataset):
    """Card, eps, target menu, test set and training curves of the chosen model."""
    if not model:
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
    chosen = H.select_model(model)
    # the budget follows the model only across datasets, so a preset's own eps is not overwritten
    eps = chosen.eps if chosen.dataset != current_dataset else gr.update()
    return chosen.card, eps, gr.update(choices=chosen.classes, value="none"), chosen.dataset, chosen.curves


def follow_evaluate_model(model, current_dataset):
    """Evaluate tab: the test set follows the model; both eps fields follow only when the test set changes, so what
    the user typed for this test set stays."""
    if not model:
        return gr.update(), gr.update(), gr.update()
    defaults = E.evaluation_defaults(model)
    if defaults.dataset == current_dataset:
        return defaults.dataset, gr.update(), gr.update()
    return outputs(defaults)


def preview(model, source, dataset, index, upload, sketch, fit):
    if not model:
        return None, "Choose a model to see what it sees."
    return outputs(H.preview(_ask(Q.PreviewRequest, locals())))


def cost(model, attack, eps, steps, step_size, restarts, target, seed):
    if not model:
        return ""
    try:
        return H.estimate_cost(_ask(Q.CostRequest, locals()))
    except gr.Error as exc:  # shown in place while the user is still typing, not as a pop-up
        return f"**Cannot run yet:** {exc.message}"


def run_attack(model, source, dataset, index, upload, sketch, fit, attack, eps, steps, step_size, restarts, target,
               seed, request: gr.Request, progress=gr.Progress()):
    return outputs(H.run_attack(_ask(Q.AttackRequest, locals()), progress=progress, session=request))


def compare(models, source, dataset, index, upload, sketch, fit, attack, eps, steps, step_size, restarts, target,
            seed, request: gr.Request, progress=gr.Progress()):
    return outputs(C.compare_models(_ask(Q.CompareRequest, locals()), progress=progress, session=request))


def transfer(models, dataset, n, attack, eps, steps, restarts, seed, request: gr.Request, progress=gr.Progress()):
    return outputs(C.transfer(_ask(Q.TransferRequest, locals()), progress=progress, session=request))


def evaluate(model, dataset, n, attacks, eps, steps, restarts, seed, request: gr.Request, progress=gr.Progress()):
    return outputs(E.evaluate_model(_ask(Q.EvaluateRequest, locals()), progress=progress, session=request))


def eps_curves(models, dataset, n, attack, eps_values, steps, restarts, seed, request: gr.Request,
               progress=gr.Progress()):
    return outputs(E.eps_curves(_ask(Q.CurvesRequest, locals()), progress=progress, session=request))
