"""push_to_hub through huggingface_hub's real upload path to the local Hub, then back with load_model."""
from __future__ import annotations

import json

import torch

from ssm_models import create_model
from ssm_models.hub import load_model, save_pretrained
from ssm_models.hub_push import push_to_hub

TINY = {"d_model": 8, "n_layers": 1, "d_state": 4, "image_size": 8, "num_classes": 3}


def test_a_pushed_model_holds_the_files_save_pretrained_writes_and_loads_back(hub_server, tmp_path):
    torch.manual_seed(0)
    model = create_model("s4", **TINY).eval()
    card = {"dataset": "mnist", "method": "st", "metrics": {"clean_acc": 0.5}}
    info = push_to_hub(model, "org/pushed", card=card, token="hf_local")
    assert info.oid == hub_server.commit_of("org/pushed")
    save_pretrained(model, tmp_path / "local", card=card)
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json"):
        pushed = (hub_server.root / "org" / "pushed" / name).read_bytes()
        assert pushed == (tmp_path / "local" / name).read_bytes(), name
    loaded = load_model("org/pushed")
    assert loaded.source_info["revision"] == info.oid
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_pushing_again_replaces_the_files_in_a_new_commit(hub_server):
    first = push_to_hub(create_model("s4", **TINY), "org/again", token="hf_local")
    second = push_to_hub(create_model("dss", **TINY), "org/again", token="hf_local")
    assert first.oid != second.oid
    config = json.loads((hub_server.root / "org" / "again" / "config.json").read_text())
    assert config["arch"] == "dss"
