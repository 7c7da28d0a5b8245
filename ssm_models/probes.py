"""Record every component's output in one forward pass, under stable names, via forward hooks."""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Iterable, Iterator

import torch
from torch import nn


def probe_modules(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """Stable probe name -> module, in forward order (the classifier declares them)."""
    return model.probe_modules()


def probe_names(model: nn.Module) -> list[str]:
    return list(probe_modules(model))


class ProbeRecord:
    """Outputs captured by `record`; `outputs[name]` is (B, L, H) for token features, (B, H) after pooling."""

    def __init__(self):
        self.outputs: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.outputs[name]

    def __iter__(self):
        return iter(self.outputs)

    def items(self):
        return self.outputs.items()

    def keys(self):
        return self.outputs.keys()


@contextlib.contextmanager
def record(model: nn.Module, names: Iterable[str] | None = None, detach: bool = False) -> Iterator[ProbeRecord]:
    """`with record(model) as rec: model(x)` fills `rec.outputs`. Hooks exist only inside the block,
    so a model that is not being probed pays nothing. With `detach=False` the recorded tensors stay in
    the autograd graph (for losses on internal features)."""
    modules = probe_modules(model)
    wanted = list(modules) if names is None else list(names)
    missing = [n for n in wanted if n not in modules]
    if missing:
        raise KeyError(f"unknown probe names: {missing}; available: {list(modules)}")
    rec = ProbeRecord()
    for name in wanted:  # keep forward order even when hooks fire out of order
        rec.outputs[name] = None  # type: ignore[assignment]
    handles = []

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            rec.outputs[name] = out.detach() if detach else out

        return hook

    try:
        for name in wanted:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        yield rec
    finally:
        for h in handles:
            h.remove()
        for name in [n for n, v in rec.outputs.items() if v is None]:
            del rec.outputs[name]
