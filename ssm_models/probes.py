"""Record every component's input and output in one forward pass, under stable names, via forward (pre-)hooks."""
from __future__ import annotations

import contextlib
import inspect
from collections import OrderedDict
from typing import Callable, Iterable, Iterator

import torch
from torch import nn


def probe_modules(model: nn.Module) -> "OrderedDict[str, nn.Module]":
    """Stable probe name -> module, in forward order (the classifier declares them)."""
    return model.probe_modules()


def probe_names(model: nn.Module) -> list[str]:
    return list(probe_modules(model))


# Components whose input is not an argument of their probed module, as (block class, probe suffix) -> (the probe
# whose output holds it, how to take it). Mamba's depthwise conv is a method of the block (`causal_conv`), and the
# `conv` probe is the SiLU after it: the conv's own input is the x half of in_proj's output (the z half bypasses
# the conv and reaches only the gate). If mamba.py gives the conv a module of its own, its pre-hook replaces this.
DERIVED_INPUTS: dict[tuple[str, str], tuple[str, Callable[[torch.Tensor], torch.Tensor], str]] = {
    ("MambaBlock", "conv"): ("in_proj", lambda out: out.chunk(2, dim=-1)[0], "x half of in_proj's output"),
}


def input_description(model: nn.Module, name: str) -> str:
    """Which tensor a probe's recorded input is, for reports: the module's `probe_input_label` ("x + mixer(x)"),
    else "argument 'v'" (of its forward), or a derived input's description ("x half of in_proj's output")."""
    derived = _derived_input(model, name)
    if derived is not None:
        return derived[2]
    module = probe_modules(model)[name]
    if hasattr(module, "probe_input_label"):
        return module.probe_input_label
    position = getattr(module, "probe_input", 0)
    arguments = [p for p in inspect.signature(module.forward).parameters if p not in ("args", "kwargs")]
    return f"argument {arguments[position]!r}" if position < len(arguments) else f"argument {position}"


def _derived_input(model: nn.Module, name: str):
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "layers":
        return None
    mixer = model.layers[int(parts[1])].mixer
    return DERIVED_INPUTS.get((type(mixer).__name__, parts[2]))


class ProbeRecord:
    """What `record` captured: `outputs[name]` and `inputs[name]` (the component's own input: the argument its
    module declares in `probe_input`, default the first, or a derived tensor), each (B, L, H) for token features
    and (B, H) after pooling. Indexing and iteration go over the outputs."""

    def __init__(self):
        self.outputs: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self.inputs: "OrderedDict[str, torch.Tensor]" = OrderedDict()

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
    """`with record(model) as rec: model(x)` fills `rec.outputs` and `rec.inputs`. Hooks exist only inside the
    block, so a model that is not being probed pays nothing, and they only read tensors: the forward pass computes
    exactly what it computes without them. With `detach=False` the recorded tensors stay in the autograd graph
    (for losses on internal features)."""
    modules = probe_modules(model)
    wanted = list(modules) if names is None else list(names)
    missing = [n for n in wanted if n not in modules]
    if missing:
        raise KeyError(f"unknown probe names: {missing}; available: {list(modules)}")
    rec = ProbeRecord()
    for name in wanted:  # keep forward order even when hooks fire out of order
        rec.outputs[name] = rec.inputs[name] = None  # type: ignore[assignment]
    handles = []

    def keep(store: dict, name: str, tensor: torch.Tensor) -> None:
        store[name] = tensor.detach() if detach else tensor

    def output_hook(name: str):
        def hook(_module, _inputs, output):
            keep(rec.outputs, name, output[0] if isinstance(output, tuple) else output)

        return hook

    def input_hook(name: str, position: int):
        def hook(module, inputs):
            if position >= len(inputs):
                raise RuntimeError(f"probe {name}: {type(module).__name__} declares input argument {position} "
                                   f"but was called with {len(inputs)} positional argument(s)")
            keep(rec.inputs, name, inputs[position])

        return hook

    def derived_input_hook(name: str, take: Callable[[torch.Tensor], torch.Tensor]):
        def hook(_module, _inputs, output):
            keep(rec.inputs, name, take(output))

        return hook

    try:
        for name in wanted:
            module = modules[name]
            handles.append(module.register_forward_hook(output_hook(name)))
            derived = _derived_input(model, name)
            if derived is None:
                handles.append(module.register_forward_pre_hook(input_hook(name, getattr(module, "probe_input", 0))))
            else:  # the source module's output, e.g. layers.0.in_proj for layers.0.conv
                source = modules[name.rsplit(".", 1)[0] + "." + derived[0]]
                handles.append(source.register_forward_hook(derived_input_hook(name, derived[1])))
        yield rec
    finally:
        for h in handles:
            h.remove()
        for name in [n for n, v in rec.outputs.items() if v is None]:
            del rec.outputs[name]
        for name in [n for n, v in rec.inputs.items() if v is None]:
            del rec.inputs[name]
