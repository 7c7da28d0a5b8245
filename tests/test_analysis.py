"""Error-scaling analysis: definitions, change rates and token maps."""
import torch
import torch.nn.functional as F

from ssm_lab.analysis import (
    error_scaling,
    feature_kl,
    feature_mse,
    feature_relative_error,
    summarize_by_component,
)
from ssm_models import create_model, probe_names, record


def test_relative_error_ignores_a_common_rescaling_that_mse_sees():
    clean, adv = torch.randn(3, 5, 4), torch.randn(3, 5, 4)  # (B, L, H)
    rel = feature_relative_error(clean, adv)
    assert torch.allclose(feature_relative_error(40 * clean, 40 * adv), rel)
    assert torch.allclose(feature_mse(40 * clean, 40 * adv), 1600 * feature_mse(clean, adv))
    expected = ((clean - adv) ** 2).sum(dim=(1, 2)) / (clean ** 2).sum(dim=(1, 2))  # (B,)
    assert torch.allclose(rel, expected.double())
    assert (feature_relative_error(clean, clean) == 0).all()


def test_kl_and_mse_are_zero_for_identical_and_positive_otherwise():
    a = torch.randn(3, 5, 7)
    assert torch.allclose(feature_kl(a, a), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(feature_mse(a, a), torch.zeros(3, dtype=torch.float64))
    b = a + 0.1 * torch.randn_like(a)
    assert (feature_kl(a, b) > 0).all()
    assert (feature_mse(a, b) > 0).all()
    # MSE is the plain mean of squared differences
    assert torch.allclose(feature_mse(a, b), ((a - b) ** 2).double().mean(dim=(1, 2)))


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



def _row(analysis, probe):
    return next(r for r in analysis["components"] if r["probe"] == probe)


def _check_row(analysis, probe, before, after):
    """The row's MSE and KL before/after equal the hand-computed errors of the (clean, adversarial) pairs."""
    row = _row(analysis, probe)
    for metric, fn in (("mse", feature_mse), ("kl", feature_kl)):
        b, a = fn(*before).mean().item(), fn(*after).mean().item()
        assert abs(row[f"{metric}_before"] - b) <= 1e-9 * max(1.0, b), (probe, metric, row[f"{metric}_before"], b)
        assert abs(row[f"{metric}_after"] - a) <= 1e-9 * max(1.0, a), (probe, metric, row[f"{metric}_after"], a)
        rate = (a - b) / b
        assert abs(row[f"{metric}_change_rate"] - rate) <= 1e-6 * max(1.0, abs(rate)), (probe, metric)


def _pair(model):
    torch.manual_seed(1)
    x = torch.rand(5, 1, 8, 8)
    return x, (x + 0.1 * torch.randn_like(x)).clamp(0, 1)


@torch.no_grad()
def test_s4_rates_compare_each_component_with_its_own_input_by_hand():
    torch.manual_seed(0)
    model = create_model("s4", d_model=8, d_state=4, n_layers=1, image_size=8, tokenizer="patch", patch_size=2,
                         activation="gelu").eval()
    x, adv = _pair(model)
    out = error_scaling(model, x, adv)
    layer = model.layers[0]
    pieces = []
    for images in (x, adv):
        u = model.embed_norm(model.tokens(images))  # (B, L, H): the layer's input
        conv = layer.mixer.ssm(u)
        act = F.gelu(conv)
        mixed = layer.mixer.output_linear(act)
        z = u + mixed  # the residual sum: residual_norm's own input
        pieces.append({"u": u, "conv": conv, "act": act, "mixed": mixed, "z": z, "norm": layer.residual_norm(z)})
    clean, attacked = pieces
    pair = lambda key: (clean[key], attacked[key])  # noqa: E731
    _check_row(out, "layers.0.ssm", pair("u"), pair("conv"))
    _check_row(out, "layers.0.act", pair("conv"), pair("act"))
    _check_row(out, "layers.0.linear", pair("act"), pair("mixed"))
    _check_row(out, "layers.0.residual_norm", pair("z"), pair("norm"))
    assert _row(out, "layers.0.residual_norm")["input"] == "x + mixer(x)"


@torch.no_grad()
def test_mamba_conv_is_compared_with_the_x_half_of_in_proj_by_hand():
    torch.manual_seed(0)
    model = create_model("mamba", d_model=8, d_state=4, n_layers=1, image_size=8, tokenizer="patch",
                         patch_size=2).eval()
    x, adv = _pair(model)
    out = error_scaling(model, x, adv)
    block = model.layers[0].mixer
    halves, convs = [], []
    for images in (x, adv):
        u = model.embed_norm(model.tokens(images))  # (B, L, H)
        x_half = block.in_proj(u).chunk(2, dim=-1)[0]  # (B, L, E)
        halves.append(x_half)
        convs.append(F.silu(block.causal_conv(x_half)))
    _check_row(out, "layers.0.conv", halves, convs)
    assert _row(out, "layers.0.conv")["input"] == "x half of in_proj's output"


@torch.no_grad()
def test_mega_attention_and_gate_are_compared_with_their_values_and_candidate_by_hand():
    torch.manual_seed(0)
    model = create_model("mega", d_model=8, d_state=4, n_layers=1, image_size=8, tokenizer="patch", patch_size=2,
                         mega_z_dim=4, mega_hidden=8, mega_ema_dim=2).eval()
    x, adv = _pair(model)
    out = error_scaling(model, x, adv)
    block = model.layers[0].mixer
    parts = {"v": [], "attn": [], "h": [], "gate": []}
    for images in (x, adv):
        u = model.embed_norm(model.tokens(images))  # (B, L, H)
        v = F.silu(block.v_proj(u))  # (B, L, V)
        gates, zr, hx = block.mx_proj(block.ema(u)).split([block.d_model, block.z_dim + block.hidden,
                                                            block.d_model], dim=-1)
        z, r = F.silu(zr).split([block.z_dim, block.hidden], dim=-1)
        attn = block.attn(z * block.gamma[0] + block.beta[0], z * block.gamma[1] + block.beta[1], v)  # (B, L, V)
        h = F.silu(hx + block.h_proj(attn * r))  # (B, L, H): the candidate
        gate = torch.sigmoid(gates) * h + (1 - torch.sigmoid(gates)) * u
        for key, value in (("v", v), ("attn", attn), ("h", h), ("gate", gate)):
            parts[key].append(value)
    _check_row(out, "layers.0.attn", parts["v"], parts["attn"])
    _check_row(out, "layers.0.gate", parts["h"], parts["gate"])
    assert _row(out, "layers.0.attn")["input"] == "argument 'v'"


@torch.no_grad()
def test_recording_inputs_leaves_every_familys_output_unchanged():
    for arch in ("s4", "dss", "s5", "mega", "mamba"):
        torch.manual_seed(0)
        model = create_model(arch, d_model=8, d_state=4, n_layers=2, image_size=8, tokenizer="patch",
                             patch_size=2).eval()
        x = torch.rand(3, 1, 8, 8)
        plain = model(x)
        with record(model) as rec:
            probed = model(x)
        assert torch.equal(plain, probed), arch
        assert list(rec.inputs) == list(rec.outputs), arch
