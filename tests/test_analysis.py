"""Error-scaling analysis: definitions, change rates and token maps."""
import torch

from ssm_lab.analysis import (
    component_chain,
    error_scaling,
    feature_kl,
    feature_mse,
    feature_relative_error,
    summarize_by_component,
)
from ssm_models import create_model, probe_names


def test_relative_error_ignores_a_common_rescaling_that_mse_sees():
    clean, adv = torch.randn(3, 5, 4), torch.randn(3, 5, 4)  # (B, L, H)
    rel = feature_relative_error(clean, adv)
    assert torch.allclose(feature_relative_error(40 * clean, 40 * adv), rel)
    assert torch.allclose(feature_mse(40 * clean, 40 * adv), 1600 * feature_mse(clean, adv))
    expected = ((clean - adv) ** 2).sum(dim=(1, 2)) / (clean ** 2).sum(dim=(1, 2))  # (B,)
    assert torch.allclose(rel, expected.double()) and (feature_relative_error(clean, clean) == 0).all()


def test_kl_and_mse_are_zero_for_identical_and_positive_otherwise():
    a = torch.randn(3, 5, 7)
    assert torch.allclose(feature_kl(a, a), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(feature_mse(a, a), torch.zeros(3, dtype=torch.float64))
    b = a + 0.1 * torch.randn_like(a)
    assert (feature_kl(a, b) > 0).all() and (feature_mse(a, b) > 0).all()
    # MSE is the plain mean of squared differences
    assert torch.allclose(feature_mse(a, b), ((a - b) ** 2).double().mean(dim=(1, 2)))


def test_chain_links_each_component_to_the_previous_probe():
    names = ["embed", "embed_norm", "layers.0.ssm", "layers.0.linear", "layers.0.residual_norm",
             "layers.1.ssm", "pool", "logits"]
    chain = component_chain(names)
    assert chain[0] == ("ssm", "layers.0.ssm", "embed_norm", 0)
    assert chain[2] == ("residual_norm", "layers.0.residual_norm", "layers.0.linear", 0)
    assert chain[3] == ("ssm", "layers.1.ssm", "layers.0.residual_norm", 1)


def test_error_scaling_on_a_model():
    torch.manual_seed(0)
    for tokenizer in ("pixel", "patch", "paper"):
        model = create_model("s4", d_model=8, d_state=4, n_layers=2, image_size=8, in_channels=3,
                             tokenizer=tokenizer, patch_size=2, ads="relu")
        x = torch.rand(6, 3, 8, 8)
        adv = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
        out = error_scaling(model, x, adv, batch_size=4)
        assert out["n"] == 6
        assert list(out["probes"]) == probe_names(model)
        rates = summarize_by_component(out["components"])
        assert {"ssm", "ads", "linear", "residual_norm"} <= set(rates)
        maps = out["token_error_maps"]
        assert torch.tensor(maps["layers.1.residual_norm"]).shape == (8, 8)
        same = error_scaling(model, x, x)
        assert all(v["mse"] == 0 for v in same["probes"].values())
