"""The paper-scale benchmark's peers compute what our models compute, and the naive-kernel switch is undone."""
from __future__ import annotations

import torch

from benchmarks.paper_models import images, naive_cauchy_kernels, paper_model, with_mambapy_mixers, with_scan
from ssm_models import kernels


def test_mamba_peers_give_the_same_logits_as_our_scan():
    model = paper_model("mamba", quick=True)
    x = images(3, model)
    with torch.no_grad():
        ours = model(x)
        for peer in (with_mambapy_mixers(model), with_scan(model, "sequential"), with_scan(model, "tiled")):
            assert torch.allclose(peer(x), ours, atol=1e-5), peer.layers[0].mixer


def test_mambapy_peer_really_runs_mambapys_block():
    peer = with_mambapy_mixers(paper_model("mamba", quick=True))
    assert all(type(layer.mixer).__module__ == "mambapy.mamba" for layer in peer.layers)


def test_naive_cauchy_switch_matches_and_restores_the_model():
    model = paper_model("s4", quick=True)
    x = images(2, model)
    with torch.no_grad():
        ours = model(x)
        with naive_cauchy_kernels(model):
            assert kernels._CACHE_ENABLED is False
            naive = model(x)
        after = model(x)
    assert torch.allclose(naive, ours, atol=1e-5)
    assert kernels._CACHE_ENABLED is True
    assert not any("cauchy_kernel" in vars(m) for m in model.modules())
    assert torch.equal(after, ours)
