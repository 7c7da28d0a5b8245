"""The compiled selective scan equals the sequential reference, is what `selective_scan` runs, and is set up."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from model_helpers import rel_err, scan_inputs

from ssm_models import scan_ext
from ssm_models.pscan import selective_scan, selective_scan_sequential
from ssm_models.scan_ext import build as scan_build
from ssm_models.scan_ext import compiled_scan

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
NAMES = ["x", "dt", "A", "B", "C"]
# (batch, L, E, N): a typical small case, one step, a one-element state, one image of one channel, and odd sizes
SHAPES = [(3, 23, 6, 4), (2, 1, 5, 3), (2, 9, 5, 1), (1, 17, 1, 3), (1, 1, 1, 1), (4, 31, 7, 9)]


def compare_with_reference(inputs, seed=2):
    """(output error, {name: gradient error}) of the kernel against the sequential reference, for one random
    output gradient."""
    dtype = inputs[0].dtype
    grad_y = torch.randn(inputs[0].shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    ours, reference = compiled_scan(*inputs), selective_scan_sequential(*inputs)
    ours_grads = torch.autograd.grad(ours, inputs, grad_y)
    reference_grads = torch.autograd.grad(reference, inputs, grad_y)
    errors = {}
    for name, a, b in zip(NAMES, ours_grads, reference_grads):
        # with no decayed state (L = 1) dL/dA is exactly zero on both sides: compare absolutely then
        errors[name] = rel_err(a, b) if b.abs().max() > 0 else float(a.abs().max())
    return rel_err(ours, reference), errors


def assert_matches_reference(inputs, label: str) -> None:
    dtype = inputs[0].dtype
    output_error, gradient_errors = compare_with_reference(inputs)
    assert output_error < TOLERANCE[dtype], f"y: {output_error:.2e}, {label}"
    for name, error in gradient_errors.items():
        assert error < TOLERANCE[dtype], f"d{name}: {error:.2e}, {label}"


def test_the_compiled_kernel_is_built_and_loads():
    assert scan_ext.load(), "run `.venv/bin/python -m ssm_models.scan_ext build` (scripts/setup.sh does)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_kernel_matches_the_sequential_reference_in_values_and_gradients(shape, dtype):
    assert_matches_reference(scan_inputs(*shape, dtype)[:5], f"{shape}, {dtype}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernel_matches_the_reference_on_non_contiguous_inputs(dtype):
    x, dt, A, B, C = (t.detach() for t in scan_inputs(2, 13, 5, 3, dtype)[:5])
    # channel-major storage for x and dt, a transposed A, a batch-strided B and C: none of them contiguous
    strided = [x.transpose(1, 2).contiguous().transpose(1, 2), dt.transpose(1, 2).contiguous().transpose(1, 2),
               A.T.contiguous().T, torch.cat([B, B], 0)[::2], torch.cat([C, C], 2)[..., :3]]
    assert not any(t.is_contiguous() for t in strided)
    assert_matches_reference([t.requires_grad_() for t in strided], f"strided, {dtype}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernel_matches_the_reference_on_two_threads_summing_their_gradient_buffers(dtype):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_matches_reference(scan_inputs(3, 23, 6, 4, dtype)[:5], f"2 threads, {dtype}")
    finally:
        torch.set_num_threads(previous)


def test_the_kernel_passes_gradcheck_in_float64():
    inputs = [t.detach().requires_grad_() for t in scan_inputs(2, 7, 3, 2, torch.float64)[:5]]
    assert torch.autograd.gradcheck(compiled_scan, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selective_scan_runs_the_kernel_when_it_is_built(dtype, monkeypatch):
    monkeypatch.delenv(scan_ext.ENV_SWITCH, raising=False)  # the default, whatever the suite runs with
    y = selective_scan(*scan_inputs(2, 5, 3, 2, dtype)[:5])
    assert type(y.grad_fn).__name__ == "_CompiledScanBackward"


def test_switching_the_kernel_off_falls_back_to_the_pytorch_scan(monkeypatch):
    monkeypatch.setenv(scan_ext.ENV_SWITCH, "0")
    y = selective_scan(*scan_inputs(2, 5, 3, 2, torch.float32)[:5])
    assert type(y.grad_fn).__name__ == "_TiledSelectiveScanBackward"


def test_inputs_of_mixed_dtypes_take_the_pytorch_scan():
    x, dt, A, B, C = scan_inputs(2, 5, 3, 2, torch.float32)[:5]
    y = selective_scan(x, dt, A.detach().double(), B, C)
    assert type(y.grad_fn).__name__ != "_CompiledScanBackward"


def test_a_build_from_another_source_is_not_loaded(monkeypatch, tmp_path):
    edited = tmp_path / "scan_kernel.cpp"
    edited.write_text(scan_build.SOURCE.read_text() + "\n// edited\n")
    monkeypatch.setattr(scan_build, "SOURCE", edited)
    assert not scan_build.stamp_matches()


def test_setup_builds_the_kernel_after_installing_the_project():
    lines = (ROOT / "scripts" / "setup.sh").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if "install" in line and " -e ." in line)
    command = re.compile(r"\s*\.venv/bin/python -m ssm_models\.scan_ext build")
    builds = [i for i, line in enumerate(lines) if command.match(line)]
    assert len(builds) == 1, f"expected one kernel build line in setup.sh, found lines {builds}"
    assert builds[0] > install, "the kernel build must follow the install of torch and the project"


def test_the_kernel_with_its_d_term_passes_gradcheck_in_float64():
    inputs = [t.detach().requires_grad_() for t in scan_inputs(2, 7, 3, 2, torch.float64)[:6]]
    assert torch.autograd.gradcheck(compiled_scan, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernel_with_its_d_term_equals_the_sequential_reference(dtype):
    inputs = [t.detach().requires_grad_() for t in scan_inputs(3, 23, 6, 4, dtype)[:6]]
    grad_y = torch.randn(inputs[0].shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    ours, reference = compiled_scan(*inputs), selective_scan_sequential(*inputs)
    assert rel_err(ours, reference) < TOLERANCE[dtype]
    ours_grads = torch.autograd.grad(ours, inputs, grad_y)
    reference_grads = torch.autograd.grad(reference, inputs, grad_y)
    for name, a, b in zip([*NAMES, "D"], ours_grads, reference_grads):
        assert rel_err(a, b) < TOLERANCE[dtype], (name, rel_err(a, b))
