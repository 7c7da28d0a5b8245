"""Interval rules for comparing accuracies: Newcombe's paired-difference interval and the separation test."""
from __future__ import annotations

import math

from .evaluate import wilson_interval


def paired_difference(first: list[bool], second: list[bool]) -> dict:
    """first-rate minus second-rate on the same images, with Newcombe's (1998, method 10) 95% interval.

    Pairing matters: PGD-10 and AutoAttack break mostly the same images, so the difference of two robust
    accuracies is far better known than the two independent Wilson intervals suggest."""
    if len(first) != len(second):
        raise ValueError(f"paired outcomes need the same images: got {len(first)} and {len(second)} outcomes")
    n = len(first)
    if n == 0:
        raise ValueError("paired_difference needs at least one image")
    both = sum(1 for a, b in zip(first, second) if a and b)
    only_first = sum(1 for a, b in zip(first, second) if a and not b)
    only_second = sum(1 for a, b in zip(first, second) if b and not a)
    neither = n - both - only_first - only_second
    first_n, second_n = both + only_first, both + only_second
    margins = first_n * (only_second + neither) * second_n * (only_first + neither)
    phi = (both * neither - only_first * only_second) / math.sqrt(margins) if margins else 0.0
    diff, ci = hybrid_score_difference(first_n, n, second_n, n, phi)
    return {"difference": diff, "ci95": ci, "n": n, "only_first": only_first, "only_second": only_second}


def hybrid_score_difference(k1: int, n1: int, k2: int, n2: int, phi: float = 0.0) -> tuple[float, list[float]]:
    """k1/n1 - k2/n2 with Newcombe's hybrid score interval from the two Wilson intervals; phi is the correlation
    of paired outcomes (0 for independent samples, Newcombe's 1998 method 10 in both cases)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1)
    l2, u2 = wilson_interval(k2, n2)
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    diff = p1 - p2
    return diff, [max(-1.0, diff - below), min(1.0, diff + above)]


def separated(first: list[float] | tuple[float, float], second: list[float] | tuple[float, float]) -> bool:
    """True when two 95% intervals do not overlap: the only case in which the lab states a difference."""
    return first[0] > second[1] or second[0] > first[1]


def excludes_zero(interval: list[float] | tuple[float, float]) -> bool:
    """True when a difference's interval lies wholly on one side of zero."""
    return interval[0] > 0 or interval[1] < 0
