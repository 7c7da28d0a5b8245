"""Tensors autograd saves for the backward, dropped after the forward and recomputed at their first use."""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable

import torch


class _Saved:
    """One tensor autograd packed: kept as is, or (once its base is known) where to cut it from the recomputed base."""

    __slots__ = ("tensor", "base", "geometry")

    def __init__(self, tensor: torch.Tensor):
        self.tensor, self.base, self.geometry = tensor, None, None


class RecomputedSaves:
    """Inside `saving()`, every tensor autograd saves that lies in a storage registered with `keep(name, tensor)`
    is released (when saved, or at the block's exit if it was saved before it was registered, as a Function's
    output) and rebuilt in the backward by `stages`, functions run in order, each taking what the earlier ones
    returned ({name: tensor}) and returning more, computed exactly as in the forward. Others are kept as usual.

    Why saved-tensor hooks rather than `torch.utils.checkpoint`: the forward runs once, as written (module hooks
    fire once and see its own tensors), and the recomputation is free to call modules' `forward` without hooks.
    An unpack runs the stages up to the one that returns its base (so what the backward needs late is not held
    early); earlier stages' results are kept until the last stage ran, and each base is released once all its
    saved tensors were unpacked, so one backward pass holds a recomputation only for one block at a time.
    `guard` tensors (the inputs and parameters the stages read) must not change in place between forward and
    backward, as autograd requires of saved ones.
    First-order gradients only: recomputed tensors carry no graph.
    """

    def __init__(self, stages: list[Callable[[dict], dict]], guard: list[torch.Tensor]):
        self._stages = stages
        self._versions = [(t, t._version) for t in guard]
        # forward only: storage address -> (name, weak reference to the tensor registered, its storage offset);
        # weak, so that a registered tensor dies when the forward drops it, and checked, since its address may
        # then be reused by another tensor
        self._bases: dict[int, tuple[str, weakref.ref, int]] = {}
        self._pending: list[_Saved] = []  # forward only: saved before their base was registered
        self._uses: dict[str, int] = {}  # name -> saved tensors cut from it, per backward
        self._left: dict[str, int] = {}
        self._cache: dict[str, torch.Tensor] = {}
        self._stage, self._carry, self._produced = 0, {}, set()  # the recomputation under way in this backward

    def keep(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        self._bases[tensor.untyped_storage().data_ptr()] = (name, weakref.ref(tensor), tensor.storage_offset())
        return tensor

    @contextlib.contextmanager
    def saving(self):
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self
        self._release()

    def _pack(self, tensor: torch.Tensor) -> _Saved:
        saved = _Saved(tensor)
        if not self._match(saved):
            self._pending.append(saved)
        return saved

    def _match(self, saved: _Saved) -> bool:
        """Replace the saved tensor by where to cut it from its recomputed base, if it lies in a registered one."""
        t = saved.tensor
        entry = self._bases.get(t.untyped_storage().data_ptr())
        if entry is None or entry[1]() is None:
            return False
        name, _, base_offset = entry
        saved.base, saved.tensor = name, None
        saved.geometry = (t.shape, t.stride(), t.storage_offset() - base_offset)
        self._uses[name] = self._uses.get(name, 0) + 1
        return True

    def _release(self) -> None:
        for saved in self._pending:
            self._match(saved)
        self._bases, self._pending = {}, []

    def _unpack(self, saved: _Saved) -> torch.Tensor:
        if saved.tensor is not None:
            return saved.tensor
        name = saved.base
        if name not in self._cache:
            self._produce(name)
        base = self._cache[name]
        self._left[name] -= 1
        if self._left[name] <= 0:
            del self._cache[name]
        shape, stride, offset = saved.geometry
        return base.as_strided(shape, stride, base.storage_offset() + offset)

    def _produce(self, name: str) -> None:
        if name in self._produced:  # used up already: another backward through a retained graph starts over
            self._stage, self._carry, self._produced = 0, {}, set()
        if self._stage == 0:
            self._check_versions()
        while name not in self._produced:
            with torch.no_grad():
                values = self._stages[self._stage](self._carry)
            self._stage += 1
            self._carry.update(values)
            self._produced.update(values)
            for n, tensor in values.items():
                if n in self._uses:
                    self._cache[n], self._left[n] = tensor, self._uses[n]
        if self._stage == len(self._stages):
            self._carry = {}

    def _check_versions(self) -> None:
        for tensor, version in self._versions:
            if tensor._version != version:
                raise RuntimeError("a tensor the backward recomputes from was modified in place after the forward "
                                   f"(version {version} -> {tensor._version}, shape {tuple(tensor.shape)})")
