"""torchrun support: process-group setup, sharding, exact gathering and a DDP wrapper that keeps attacks local."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn


def init() -> bool:
    """Join the process group described by torchrun's RANK / WORLD_SIZE / LOCAL_RANK; a no-op without them.

    Returns True when this process is one of several. gloo on CPU, nccl when CUDA is available.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def cleanup(*, failed: bool = False) -> None:
    """Leave the process group. After success every rank first waits for the others: a rank that tears gloo down
    while its peer is still talking aborts the peer ("terminate called without an active exception"). After a
    failure it leaves at once, since the others may never arrive and torchrun stops them when this rank exits."""
    if dist.is_available() and dist.is_initialized():
        if not failed:
            barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def leave_when_done() -> Iterator[None]:
    """`cleanup()` when the block ends: after the other ranks if it succeeded, at once if it raised."""
    try:
        yield
    except BaseException:
        cleanup(failed=True)
        raise
    cleanup()


def shard(items: Sequence, *, strided: bool = True, rank_: int | None = None, world: int | None = None) -> list:
    """This rank's part of `items`: every world-th item (strided) or one contiguous block; deterministic."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    items = list(items)
    if strided:
        return items[r::w]
    per, extra = divmod(len(items), w)
    start = r * per + min(r, extra)
    return items[start:start + per + (1 if r < extra else 0)]


def all_gather_object(obj: Any) -> list:
    """Every rank's `obj`, in rank order, on every rank (pickled, so results arrive exactly as computed)."""
    if not active():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_across_ranks(value: float) -> float:
    if not active():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.item() / world_size()


def average_gradients(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each gradient averaged over the ranks in place (as DDP does in its backward), for gradients computed
    outside a DDP backward; unchanged in one process."""
    if active():
        for g in grads:
            dist.all_reduce(g)
            g /= world_size()
    return grads


class DistributedModel:
    """The model as the training methods see it: calls that build a parameter graph go through DDP (so gradients
    are averaged across ranks), everything else -- attacks under `frozen()`, no-grad measurements, `embed`,
    `tokens`, `config` -- goes to the plain module, because a DDP forward whose backward never reaches the
    parameters would leave its reducer waiting for gradients that never come."""

    def __init__(self, module: nn.Module):
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch.cuda.current_device()] if next(module.parameters()).is_cuda else None
        self.module = module
        self.ddp = DistributedDataParallel(module, device_ids=device_ids)

    def __call__(self, *args, **kwargs):
        builds_graph = torch.is_grad_enabled() and any(p.requires_grad for p in self.module.parameters())
        return (self.ddp if builds_graph else self.module)(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.module, name)


def unwrap(model) -> nn.Module:
    """The plain module behind `wrap`'s result (for code that needs an nn.Module, such as the attacks)."""
    return model.module if isinstance(model, DistributedModel) else model


def wrap(model: nn.Module):
    """DistributedModel when several processes train together, else the model itself."""
    return DistributedModel(model) if active() else model
