"""Mamba's memory-lean element-wise ops give autograd's values and gradients and keep less alive."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ssm_models.lean_ops import silu_gate, softplus_saving_output


def saved_bytes(fn, *inputs) -> int:
    """Bytes of the distinct storages the autograd graph of fn(*inputs) keeps for its backward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(storages.values())


def test_softplus_saving_output_passes_gradcheck_from_tiny_to_large_outputs():
    x = torch.tensor([-40.0, -5.0, -0.3, 0.0, 0.7, 6.0, 25.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(softplus_saving_output, (x,))


def test_softplus_saving_output_equals_softplus():
    x = torch.randn(3, 5, 4, dtype=torch.float64) * 10
    assert torch.equal(softplus_saving_output(x), F.softplus(x))


def test_silu_gate_passes_gradcheck_on_a_view_of_a_wider_tensor():
    y = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    xz = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: silu_gate(a, b.chunk(2, dim=-1)[1]), (y, xz))


def test_silu_gate_equals_autograds_product():
    y, z = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    assert torch.allclose(silu_gate(y, z), y * F.silu(z), rtol=0, atol=1e-7)


def test_silu_gate_keeps_half_of_what_autograd_keeps_for_a_view_of_in_proj():
    y = torch.randn(4, 64, 32, requires_grad=True)
    xz = torch.randn(4, 64, 64, requires_grad=True)
    lean = saved_bytes(lambda: silu_gate(y, xz.chunk(2, dim=-1)[1]))
    plain = saved_bytes(lambda: y * F.silu(xz.chunk(2, dim=-1)[1]))
    assert lean * 2 == plain, (lean, plain)
