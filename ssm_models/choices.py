"""Named options of a model config and of the reference importer, without torch: they check them, the CLI lists them."""
from __future__ import annotations

TOKENIZERS = ("pixel", "patch", "paper")
ADS_ACTIVATIONS = ("relu", "sigmoid", "tanh")
# the architectures the paper's code has, each with its class there
REFERENCE_CLASS = {"s4": "SSM(mode='nplr')", "dss": "SSM(mode='diag')", "mamba": "S6_SSM", "s5": "S5_SSM"}
