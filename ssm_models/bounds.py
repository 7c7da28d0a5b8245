"""One bounded-number check for every number a user sets: config fields, attack and training settings, app requests."""
from __future__ import annotations

import math
import numbers
from typing import Any


def check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None, integer: bool = False,
                 positive: bool = False, cap: str = "", text: bool = False, exact: bool = False,
                 error: type[Exception] = ValueError) -> float | int:
    """`value` as an int (`integer`) or a float, finite and inside [lo, hi] (and > 0 when `positive`); otherwise
    `error` with a message naming the field, the value and the bound.

    `text`: numbers may arrive as strings (gradio sliders send floats, API clients strings). `exact`: an integer
    must already be one (a config file's 8.0 is refused rather than rounded). `cap` says where `hi` comes from.
    Booleans are refused: True is an int to Python, never a count or a budget to a user.
    """
    number = value
    if text and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = value
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or (
            exact and integer and not isinstance(number, numbers.Integral)):
        raise error(f"{name} must be {'an integer' if exact and integer else 'a number'}, got {value!r}")
    number = int(number) if isinstance(number, numbers.Integral) else float(number)
    if isinstance(number, float) and math.isnan(number):
        raise error(f"{name} is NaN; it must be a finite number")
    if isinstance(number, float) and math.isinf(number):
        raise error(f"{name} is infinite; it must be a finite number")
    if integer:
        if isinstance(number, float) and not number.is_integer():
            raise error(f"{name} must be a whole number, got {_shown(number)}")
        number = int(number)
    if lo is not None and number < lo:
        raise error(f"{name} must {'not be negative' if lo == 0 else f'be at least {_shown(lo)}'}, "
                    f"got {_shown(number)}")
    if positive and number <= 0:
        raise error(f"{name} must be positive, got {_shown(number)}")
    if hi is not None and number > hi:
        raise error(f"{name}={_shown(number)} is above the limit of {_shown(hi)}" + (f" ({cap})" if cap else ""))
    return number


def _shown(number: float | int) -> str:
    """Whole numbers in full (1000000, not 1e+06), others in their shortest form (1.5, 0.3, 1e-09)."""
    return str(number) if isinstance(number, int) else f"{number:g}"
