"""The training methods by name, without torch: the trainer's list, the CLI's choices, the catalogue's labels."""
from __future__ import annotations

METHOD_NAMES = {"st": "standard", "pgd-at": "PGD-AT", "trades": "TRADES", "freeat": "FreeAT", "yopo": "YOPO"}
METHODS = tuple(METHOD_NAMES)
