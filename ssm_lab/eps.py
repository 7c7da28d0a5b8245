"""Eps budgets as people write them ('0.3', '8/255', 0.1) and as reports and fields show them ('8/255', '0.3')."""
from __future__ import annotations

from ssm_models.bounds import check_number

# above every useful L2 budget on the shipped data sets (the whole [0, 1] box of a CIFAR-10 image is 55.4 wide)
MAX_EPS = 64.0
LEVELS = 255  # 8-bit images: budgets are often written as a number of grey levels, k/255


def parse_eps(text, *, error: type[Exception] = ValueError) -> float:
    """'0.3', '8/255' or a number -> a float in [0, MAX_EPS]; Linf budgets above 1 are refused by the attacks."""
    if isinstance(text, str):
        raw = text.strip()
        try:
            if "/" in raw:
                num, den = raw.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(raw)
        except (ValueError, ZeroDivisionError):
            raise error(f"eps must be a number or k/{LEVELS}, got {text!r}") from None
    else:
        value = text
    return check_number("eps", value, lo=0, hi=MAX_EPS, error=error)


def grey_levels(eps: float, spec: str = ".4g") -> str:
    """0.3 -> '76.5/255': a budget or a perturbation as a number of 8-bit grey levels."""
    return f"{eps * LEVELS:{spec}}/{LEVELS}"


def eps_label(eps: float, *, approx: bool = True) -> str:
    """8/255 -> '8/255'; 0.3 -> '0.3'; 0.031 -> '0.031 (~7.9/255)', or '0.031' with approx=False (an input field).

    A whole number of grey levels reads as k/255 for the small budgets of natural images; from 0.2 up (MNIST's
    0.1-0.3) the decimal is what people write."""
    levels = eps * LEVELS
    whole = abs(levels - round(levels)) < 1e-6
    if whole and eps < 0.2:
        return f"{round(levels)}/{LEVELS}"
    text = f"{eps:.6g}"
    return text if whole or not approx else f"{text} (~{grey_levels(eps, '.1f')})"
