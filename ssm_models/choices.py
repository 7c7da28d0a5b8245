"""The values a model config's named options may take, without torch: the config checks them, the CLI offers them."""
from __future__ import annotations

TOKENIZERS = ("pixel", "patch", "paper")
ADS_ACTIVATIONS = ("relu", "sigmoid", "tanh")
