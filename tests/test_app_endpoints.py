"""The gradio endpoints map component values to request dataclasses by name: each endpoint's parameters are exactly
its request's fields, and a result leaves in the order of its fields."""
from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from app import endpoints as EP
from app import request_types as R
from app.result_types import AttackResult, outputs

ENDPOINTS = [(EP.preview, R.PreviewRequest), (EP.cost, R.CostRequest), (EP.run_attack, R.AttackRequest),
             (EP.compare, R.CompareRequest), (EP.transfer, R.TransferRequest), (EP.evaluate, R.EvaluateRequest),
             (EP.eps_curves, R.CurvesRequest)]
SESSION = {"request", "progress"}  # gradio fills these itself; the API does not show them


@pytest.mark.parametrize("endpoint, request_type", ENDPOINTS, ids=lambda x: getattr(x, "__name__", ""))
def test_every_endpoint_parameter_is_a_field_of_its_request_and_back(endpoint, request_type):
    parameters = set(inspect.signature(endpoint).parameters) - SESSION
    assert parameters == {f.name for f in fields(request_type)}


def test_a_request_refuses_a_field_it_does_not_have():
    with pytest.raises(TypeError, match="eps_values"):
        R.AttackRequest(model="m", eps_values="0.1")


def test_outputs_follow_the_order_of_the_result_fields():
    values = {f.name: f"<{f.name}>" for f in fields(AttackResult)}
    assert outputs(AttackResult(**values)) == tuple(values.values())
