"""The one bounded-number check: types, finiteness, whole numbers and bounds, each refused with its own message."""
from __future__ import annotations

import numpy as np
import pytest

from ssm_models.bounds import check_number


@pytest.mark.parametrize("kwargs, value, expected", [
    ({}, 0.25, 0.25), ({"integer": True}, 3, 3), ({"integer": True}, 3.0, 3), ({"integer": True}, np.int64(4), 4),
    ({}, np.float32(0.5), 0.5), ({"text": True}, " 2.5 ", 2.5), ({"text": True, "integer": True}, "7", 7),
    ({"lo": 0, "hi": 1}, 1, 1), ({"positive": True}, 1e-9, 1e-9),
])
def test_accepted_numbers_come_back_as_int_or_float(kwargs, value, expected):
    result = check_number("x", value, **kwargs)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("kwargs, value, message", [
    ({}, "0.3", "x must be a number, got '0.3'"),
    ({}, True, "x must be a number, got True"),
    ({"text": True}, "abc", "x must be a number, got 'abc'"),
    ({"integer": True, "exact": True}, 8.0, "x must be an integer, got 8.0"),
    ({"integer": True, "exact": True}, False, "x must be an integer, got False"),
    ({}, float("nan"), "x is NaN; it must be a finite number"),
    ({}, float("-inf"), "x is infinite; it must be a finite number"),
    ({"integer": True}, 2.5, "x must be a whole number, got 2.5"),
    ({"lo": 0}, -0.5, "x must not be negative, got -0.5"),
    ({"lo": 1}, 0, "x must be at least 1, got 0"),
    ({"positive": True}, 0.0, "x must be positive, got 0"),
    ({"hi": 200, "integer": True}, 10**9, "x=1000000000 is above the limit of 200"),
    ({"hi": 1.0}, 1.5, "x=1.5 is above the limit of 1"),
    ({"hi": 5, "cap": "server cap SSM_LAB_MAX_RESTARTS"}, 6, "x=6 is above the limit of 5 (server cap "
                                                             "SSM_LAB_MAX_RESTARTS)"),
])
def test_refused_numbers_say_which_rule_they_break(kwargs, value, message):
    with pytest.raises(ValueError) as caught:
        check_number("x", value, **kwargs)
    assert str(caught.value) == message


def test_the_error_class_is_the_callers():
    class ConfigProblem(ValueError):
        pass

    with pytest.raises(ConfigProblem):
        check_number("d_model", 0, lo=1, error=ConfigProblem)
