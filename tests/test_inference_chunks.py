"""A large batch evaluated without gradients runs in cache-sized chunks, with the logits of one pass."""
from __future__ import annotations

import pytest
import torch
from model_helpers import rel_err

from ssm_models import classifier, create_model, record

SMALL = dict(d_model=16, d_state=8, n_layers=2, image_size=8, tokenizer="pixel")


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of 2 images for these models (64 tokens x 4 x 16 values x 8 bytes = 32 KB an image)."""
    monkeypatch.setattr(classifier, "INFERENCE_CHUNK_BYTES", 2 * 64 * 4 * 16 * 8)


@pytest.mark.parametrize("arch", ["s4", "mamba", "mega"])
def test_chunked_inference_gives_the_logits_of_one_pass(arch, tiny_chunks):
    torch.manual_seed(0)
    model = create_model(arch, **SMALL).double().eval()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)  # chunks of 2, 2 and 1
    one_pass = model(x)  # gradients recorded: never chunked
    with torch.no_grad():
        assert model.inference_chunk(x) == 2
        chunked = model(x)
    assert rel_err(chunked, one_pass.detach()) < 1e-12


def test_no_chunks_with_gradients_in_training_or_under_a_hook(tiny_chunks):
    model = create_model("s4", **SMALL).double().eval()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    assert model.inference_chunk(x) == 5  # gradients are being recorded
    with torch.no_grad():
        model.train()
        assert model.inference_chunk(x) == 5
        model.eval()
        handle = model.layers[1].mixer.register_forward_hook(lambda *args: None)
        assert model.inference_chunk(x) == 5
        handle.remove()
        assert model.inference_chunk(x) == 2


def test_probes_record_the_whole_batch_even_where_it_would_be_chunked(tiny_chunks):
    model = create_model("mamba", **SMALL).eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad(), record(model, detach=True) as rec:
        model(x)
    assert {name: tensor.shape[0] for name, tensor in rec.items()} == dict.fromkeys(rec.keys(), 5)
