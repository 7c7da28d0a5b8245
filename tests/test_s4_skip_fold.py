"""S4 with a constant kernel and D folds D u into its convolution: the same values, gradients and probes."""
import pytest
import torch
from model_helpers import rel_err, seeded_model

from ssm_models import convolution, kernels, record

SMALL = dict(d_model=16, d_state=8, n_layers=2, image_size=8)


def _s4_ssm(image_size: int):
    """An S4 layer's ssm component in float64, away from its initialisation, and the sequence length it sees."""
    model = seeded_model("s4", SMALL, torch.float64, image_size=image_size, tokenizer="pixel")
    ssm = model.layers[0].mixer.ssm
    with torch.no_grad():
        for p in ssm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, ssm, image_size * image_size


@pytest.mark.parametrize("image_size", [8, 9])  # L = 64 (Toeplitz matrices) and 81 (spectra)
def test_a_frozen_s4_layer_folds_d_into_its_convolution_with_the_same_values_and_input_gradient(image_size):
    model, ssm, length = _s4_ssm(image_size)
    u = torch.randn(3, length, SMALL["d_model"], dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, length, SMALL["d_model"], dtype=torch.float64)
    with model.frozen():
        k = ssm.kernel.kernel(length)  # (H, L), cached
        reference = kernels.fft_conv(u, k) + u * ssm.D  # (B, L, H)
        folded = ssm(u)
        assert rel_err(folded, reference) < 1e-12
        # the spectral path hands the block's output linear a transposed view instead of copying it
        assert folded.is_contiguous() == (length <= convolution.DIRECT_MAX_LENGTH)
        assert rel_err(torch.autograd.grad(folded, u, g)[0], torch.autograd.grad(reference, u, g)[0]) < 1e-12


def test_a_change_of_d_through_data_reaches_the_folded_operator():
    model, ssm, length = _s4_ssm(9)
    u = torch.randn(2, length, SMALL["d_model"], dtype=torch.float64)
    with model.frozen(), torch.no_grad():
        before = ssm(u)
        ssm.D.data[0, :3] += 1.0  # bypasses the version counter; the kernel itself is still the cached one
        k = ssm.kernel.kernel(length)
        after = ssm(u)
        assert rel_err(after, kernels.fft_conv(u, k) + u * ssm.D) < 1e-12
        assert not torch.allclose(after, before)


def test_d_still_learns_when_only_the_kernel_is_constant():
    model, ssm, length = _s4_ssm(9)
    model.eval()
    for p in ssm.kernel.parameters():
        p.requires_grad_(False)  # the kernel is cached, D keeps its gradient
    u = torch.randn(2, length, SMALL["d_model"], dtype=torch.float64)
    g = torch.randn(2, length, SMALL["d_model"], dtype=torch.float64)
    (grad_d,) = torch.autograd.grad(ssm(u), ssm.D, g)
    assert rel_err(grad_d, (g * u).sum(dim=(0, 1), keepdim=True)[0]) < 1e-12


def test_a_probe_keeps_a_compact_copy_of_the_folded_output_not_a_view_of_the_whole_fft_result():
    model, ssm, length = _s4_ssm(9)
    x = torch.rand(2, 1, 9, 9, dtype=torch.float64)
    with model.frozen(), torch.no_grad():
        with record(model, ["layers.0.ssm"], detach=True) as rec:
            watched = model(x)
        kept = rec["layers.0.ssm"]
        assert kept.is_contiguous()
        assert kept.untyped_storage().nbytes() == kept.numel() * kept.element_size()
        assert rel_err(watched, model(x)) < 1e-12  # the same logits watched or not (to rounding)
