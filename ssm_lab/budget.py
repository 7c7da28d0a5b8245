"""FreeAT's equal budget: its epochs and eps ramp counted in PGD-AT epochs, divided by the replay count m."""
from __future__ import annotations

import math


def training_passes(epochs: int, replays: int, equal_budget: bool) -> int:
    """Passes over the training set: `epochs`, or at FreeAT's equal budget epochs / m rounded up (at least
    PGD-AT's optimiser steps for `epochs` epochs, since each FreeAT pass takes m steps per minibatch)."""
    return math.ceil(epochs / replays) if equal_budget else epochs


def warmup_passes(eps_warmup_epochs: float, replays: int, equal_budget: bool) -> float:
    """The eps ramp in passes over the training set (divided by m at FreeAT's equal budget)."""
    return eps_warmup_epochs / replays if equal_budget else eps_warmup_epochs
