"""The classifier shell: config validation, registry, tokenizers, probes, AdS, normalisation."""
import pytest
import torch

from ssm_models import ConfigError, ModelConfig, create_model, list_models, probe_names, record
from ssm_models.tokenizers import PaperTokens, PatchTokens, PixelTokens

SMALL = dict(d_model=8, d_state=4, n_layers=2, image_size=8)


def test_registry_lists_the_five_families():
    assert set(list_models()) == {"s4", "dss", "s5", "mega", "mamba"}
    with pytest.raises(ConfigError, match="unknown architecture"):
        create_model("transformer")


@pytest.mark.parametrize("bad, message", [
    ({"d_model": 10**6}, "d_model"),
    ({"n_layers": 0}, "n_layers"),
    ({"d_state": -1}, "d_state"),
    ({"tokenizer": "words"}, "tokenizer"),
    ({"ads": "gelu"}, "ads"),
    ({"patch_size": 3}, "divisible"),
    ({"mean": [0.5]}, "mean and std"),
    ({"ads_position": "residual"}, "only defined for mamba"),
    ({"d_model": 8.5}, "integer"),
])
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict({"arch": "s4", "tokenizer": "patch", **bad})


def test_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown config keys: evil"):
        ModelConfig.from_dict({"arch": "s4", "evil": 1})


@pytest.mark.parametrize("arch", ["s4", "dss", "s5", "mega", "mamba"])
def test_probe_names_complete_and_in_order(arch):
    model = create_model(arch, ads="sigmoid", **SMALL)
    names = probe_names(model)
    assert names[:2] == ["embed", "embed_norm"]
    assert names[-2:] == ["pool", "logits"]
    for i in range(2):
        layer = [n for n in names if n.startswith(f"layers.{i}.")]
        assert layer[-1] == f"layers.{i}.residual_norm"
        assert f"layers.{i}.ssm" in layer
        assert f"layers.{i}.ads" in layer
    x = torch.rand(2, 1, 8, 8)
    with record(model) as rec:
        logits = model(x)
    assert list(rec.keys()) == names  # every probe fired, in forward order
    assert torch.equal(rec["logits"], logits)
    assert rec["pool"].shape == (2, 8)
    rec["logits"].sum().backward()  # recorded tensors stay in the graph
    with torch.no_grad(), record(model, names=["layers.1.ssm"]) as rec2:
        model(x)
    assert list(rec2.keys()) == ["layers.1.ssm"]
    assert not any(m._forward_hooks for m in model.modules())  # probes cost nothing when off


def test_unknown_probe_name():
    model = create_model("s4", **SMALL)
    with pytest.raises(KeyError, match="unknown probe"):
        with record(model, names=["layers.9.ssm"]):
            pass


def test_mamba_ads_after_residual():
    model = create_model("mamba", ads="tanh", ads_position="residual", **SMALL)
    assert "layers.0.residual_ads" in probe_names(model)
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 10)


def test_ads_variants():
    from ssm_models.ads import AdaptiveScaling

    y = torch.randn(2, 3, 4)
    plain = AdaptiveScaling(4, "relu")
    assert torch.allclose(plain(y), torch.relu(plain.scale(y)) * y)
    biased = AdaptiveScaling(4, "sigmoid", bias=True)
    expect = torch.sigmoid(biased.scale(y)) * y + torch.sigmoid(biased.shift(y))
    assert torch.allclose(biased(y), expect)


def test_tokenizers_order_and_maps():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    pix = PixelTokens(3, 5)
    # pixel tokens: token t = pixel (t // 4, t % 4) with its 3 channel values
    tokens = x.permute(0, 2, 3, 1).reshape(2, 16, 3)
    assert torch.allclose(pix(x), pix.proj(tokens))
    # paper tokens: a raw view of NCHW, so token 0 holds channel-0 pixels 0..2
    paper = PaperTokens(3, 5)
    assert torch.allclose(paper(x), paper.proj(x.reshape(2, 16, 3)))
    values = torch.zeros(2, 16)
    values[:, 0] = 3.0  # token 0 covers flat CHW elements 0, 1, 2 = channel 0, pixels (0,0),(0,1),(0,2)
    m = paper.token_map(values, 4, 3)
    assert m.shape == (2, 4, 4)
    assert m[0, 0, 0] == 1.0
    assert m[0, 0, 3] == 0.0
    patch = PatchTokens(3, 5, 2)
    assert patch(x).shape == (2, 4, 5)
    # the fast path (flattened patches times the weight matrix) is the strided convolution, values and gradients
    images = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    coarse = PatchTokens(3, 5, 4).double()
    fast, slow = coarse(images), coarse.forward_conv(images)
    assert fast.shape == (2, 4, 5)
    assert torch.allclose(fast, slow, atol=1e-13)
    g = torch.randn_like(fast)
    inputs = (images, coarse.proj.weight, coarse.proj.bias)
    for a, b in zip(torch.autograd.grad(fast, inputs, g), torch.autograd.grad(slow, inputs, g)):
        assert torch.allclose(a, b, atol=1e-13)
    assert patch.token_map(torch.arange(4.0).repeat(2, 1), 4, 3)[0, 3, 3] == 3.0


def test_normalisation_inside_the_model():
    cfg = dict(SMALL, in_channels=3, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    torch.manual_seed(0)
    model = create_model("s4", **cfg)
    torch.manual_seed(0)
    plain = create_model("s4", **{k: v for k, v in cfg.items() if k not in ("mean", "std")})
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("normalize")})
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(model(x), plain((x - 0.5) / 0.25), atol=1e-6)
