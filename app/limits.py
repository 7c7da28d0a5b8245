"""Per-request caps of the public app, enforced on the server (sliders are only a hint), each overridable by env."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, fields

from ssm_lab.eps import parse_eps as parse_eps_as
from ssm_models.bounds import check_number
from ssm_models.errors import UserError


class LimitError(ValueError, UserError):
    """A request above a server cap or with an unusable value; the message names the field and the cap."""


@dataclass(frozen=True)
class Limits:
    steps: int = 200  # iterations of one attack
    restarts: int = 5
    eval_n: int = 200  # test images per evaluation / transfer / curve request
    eps_points: int = 8  # eps values on one curve
    compare_models: int = 4
    upload_bytes: int = 10 * 2**20
    sketch_side: int = 2048  # pixels per side of a drawing
    passes: int = 250_000  # image-level forward + backward passes one request may cost
    model_cache: int = 3  # models kept in memory (LRU)
    concurrency: int = 2  # heavy requests running at once
    queue_size: int = 16  # requests waiting at most; more are refused
    file_age: int = 3 * 3600  # seconds result files (images, downloads, uploads) are kept for the user to fetch

    @classmethod
    def from_env(cls) -> "Limits":
        """SSM_LAB_MAX_<FIELD> (e.g. SSM_LAB_MAX_STEPS=50) overrides a default; non-positive values are refused."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"SSM_LAB_MAX_{f.name.upper()}")
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = check_number(f"SSM_LAB_MAX_{f.name.upper()}", raw, lo=1, integer=True, text=True,
                                          error=LimitError)
        return cls(**values)


LIMITS = Limits.from_env()


def cleanup_period(file_age: int) -> int:
    """How often expired files are deleted: a third of their age (at most hourly), so none outlives 4/3 of it."""
    return max(1, min(3600, file_age // 3))


def as_int(name: str, value, lo: int, hi: int, cap_name: str = "") -> int:
    """A whole number in [lo, hi]; gradio sends floats from Number/Slider, and API clients may send strings."""
    return check_number(name, value, lo=lo, hi=hi, integer=True, text=True, error=LimitError,
                        cap=f"server cap {cap_name}" if cap_name else "")


def as_float(name: str, value, lo: float, hi: float) -> float:
    return check_number(name, value, lo=lo, hi=hi, text=True, error=LimitError)


# '0.3', '8/255' or a number, refused with this module's error
parse_eps = functools.partial(parse_eps_as, error=LimitError)


def parse_eps_list(text: str, limits: Limits | None = None) -> list[float]:
    """'0, 2/255, 4/255' -> sorted unique floats, at most `limits.eps_points` of them."""
    limits = limits or LIMITS
    parts = [p for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise LimitError("give at least one eps value, e.g. 0, 0.1, 0.2, 0.3")
    values = sorted({parse_eps(p) for p in parts})
    if len(values) > limits.eps_points:
        raise LimitError(f"{len(values)} eps values is above the limit of {limits.eps_points} "
                         "(server cap SSM_LAB_MAX_EPS_POINTS)")
    return values


def check_passes(cost: dict, what: str, limits: Limits | None = None) -> int:
    """Refuse a request whose stated upper bound of image-level passes is above the cap."""
    limits = limits or LIMITS
    total = int(cost.get("forward", 0)) + int(cost.get("backward", 0))
    if total > limits.passes:
        raise LimitError(f"{what} would cost up to {total:,} image-level forward+backward passes, above this "
                         f"server's limit of {limits.passes:,} (SSM_LAB_MAX_PASSES); use fewer steps, restarts, "
                         "images or a cheaper attack")
    return total
