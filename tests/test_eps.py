"""One eps parser and one eps label, shared by the CLI, the app, reports and the checkpoint table."""
from __future__ import annotations

import pytest

from ssm_lab.datasets.info import DATASETS
from ssm_lab.eps import MAX_EPS, eps_label, grey_levels, parse_eps


@pytest.mark.parametrize("text, value", [("0.3", 0.3), (" 0.3 ", 0.3), ("8/255", 8 / 255), (0.1, 0.1), (0, 0.0),
                                         ("0", 0.0), ("1.5", 1.5)])
def test_parse_eps_reads_decimals_fractions_and_numbers(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("text, message", [
    ("eight", "eps must be a number or k/255, got 'eight'"),
    ("1/0", "eps must be a number or k/255, got '1/0'"),
    ("-1", "eps must not be negative, got -1"),
    ("nan", "eps is NaN"),
    ("inf", "eps is infinite"),
    (float("nan"), "eps is NaN"),
    ("65", f"eps=65 is above the limit of {MAX_EPS:g}"),
    (True, "eps must be a number, got True"),
    (None, "eps must be a number, got None"),
])
def test_parse_eps_refuses_bad_budgets_naming_what_is_wrong(text, message):
    with pytest.raises(ValueError) as caught:
        parse_eps(text)
    assert message in str(caught.value)


def test_parse_eps_raises_the_callers_error_class():
    class RequestError(ValueError):
        pass

    with pytest.raises(RequestError):
        parse_eps("abc", error=RequestError)


@pytest.mark.parametrize("eps, label", [(8 / 255, "8/255"), (2 / 255, "2/255"), (0.0, "0/255"),
                                        (0.3, "0.3 (~76.5/255)"), (0.1, "0.1 (~25.5/255)"),
                                        (0.031, "0.031 (~7.9/255)"), (0.2, "0.2"), (1.0, "1")])
def test_eps_label_shows_grey_levels_for_small_budgets_and_decimals_above(eps, label):
    assert eps_label(eps) == label


@pytest.mark.parametrize("eps, text", [(8 / 255, "8/255"), (0.3, "0.3"), (0.031, "0.031"), (0.2, "0.2")])
def test_eps_label_without_approximation_is_what_an_eps_field_reads_back(eps, text):
    assert eps_label(eps, approx=False) == text
    assert parse_eps(text) == pytest.approx(eps)


@pytest.mark.parametrize("eps, spec, text", [(0.3, ".4g", "76.5/255"), (8 / 255, ".4g", "8/255"),
                                             (0.0312, ".1f", "8.0/255")])
def test_grey_levels_states_a_budget_in_8_bit_steps(eps, spec, text):
    assert grey_levels(eps, spec) == text


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_a_datasets_eps_label_is_its_budget_as_an_eps_field_shows_it(name):
    info = DATASETS[name]
    assert info.eps_label == eps_label(info.eps, approx=False)
