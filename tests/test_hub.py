"""Checkpoint I/O through real huggingface_hub code paths and a local Hub: round trips, caching, hostile files."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import struct
import time
import urllib.request

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from ssm_models import ConfigError, SSMClassifier, create_model, list_models
from ssm_models.hub import CheckpointError, list_checkpoints, load_model, resolve_checkpoint, save_pretrained

TINY = {"d_model": 8, "n_layers": 1, "d_state": 4, "image_size": 8, "num_classes": 3,
        "mega_z_dim": 8, "mega_ema_dim": 2, "mega_hidden": 16}


def tiny_model(arch: str = "s4", seed: int = 0, **overrides) -> SSMClassifier:
    torch.manual_seed(seed)
    return create_model(arch, **{**TINY, **overrides}).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def checkpoint(directory, arch: str = "s4", seed: int = 0) -> SSMClassifier:
    model = tiny_model(arch, seed)
    save_pretrained(model, directory)
    return model


def rewrite_weights(directory, edit) -> None:
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors")


def first_float(tensors: dict) -> str:
    return next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)


# ----- round trips and cards ---------------------------------------------------------------------
@pytest.mark.parametrize("arch", list_models())
def test_round_trip_is_bit_exact(arch, tmp_path):
    model = tiny_model(arch)
    save_pretrained(model, tmp_path / "fn")
    assert json.loads((tmp_path / "fn" / "config.json").read_text()) == model.config.to_dict()
    assert {t.dtype for t in load_file(tmp_path / "fn" / "model.safetensors").values()} == {torch.float32}

    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    loaded = load_model(tmp_path / "fn")
    assert torch.equal(torch.rand(3), expected_draw)  # loading leaves the caller's RNG stream alone
    assert same_weights(model, loaded)
    assert not loaded.training
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    digest = hashlib.sha256((tmp_path / "fn" / "model.safetensors").read_bytes()).hexdigest()
    assert loaded.source_info["sha256"] == digest
    assert loaded.source_info["revision"] is None


def test_model_card_metadata_and_body(tmp_path):
    meta = {"dataset": "mnist", "method": "pgd-at", "threat_model": {"norm": "Linf", "eps": 0.3, "steps": 10}}
    model = tiny_model("s4", ads="relu", meta=meta)
    metrics = {"clean_acc": 0.9812, "pgd10": {"adv_acc": 0.5}}
    save_pretrained(model, tmp_path, card={"metrics": metrics})
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "ssm-robustness-lab"
    assert card.data.license == "mit"
    assert card.data.pipeline_tag == "image-classification"
    assert card.data.datasets is None  # no Hub data set recorded as the training data: none claimed
    assert {"state-space-model", "adversarial-robustness", "s4", "mnist", "pgd-at", "ads"} <= set(card.data.tags)
    for text in ("## Architecture", "| d_model | 8 |", "| ads | relu |", "## Dataset", "PGD adversarial training",
                 "norm = Linf, eps = 0.3, steps = 10", "| clean_acc | 0.9812 |", "| pgd10.adv_acc | 0.5 |"):
        assert text in card.text, text
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    save_pretrained(model, tmp_path)  # a later save without a card keeps the metrics from metrics.json
    assert "| clean_acc | 0.9812 |" in ModelCard.load(tmp_path / "README.md").text


def test_model_card_claims_a_hub_dataset_only_when_training_recorded_it(tmp_path):
    meta = {"dataset": "mnist", "method": "st", "train_data": {"source": "Hub", "train": 59000,
                                                               "hub_repo": "ylecun/mnist"}}
    save_pretrained(tiny_model("s4", meta=meta), tmp_path)
    assert ModelCard.load(tmp_path / "README.md").data.datasets == ["ylecun/mnist"]


# ----- the Hub: download, cache, offline, revisions ----------------------------------------------
def test_download_then_offline_reload_from_cache(hub_server, monkeypatch):
    model = checkpoint(hub_server.root / "org" / "tiny")
    loaded = load_model("org/tiny")
    assert same_weights(model, loaded)
    assert loaded.source_info["revision"] == hub_server.commit_of("org/tiny")
    assert ("GET", "/org/tiny/resolve/main/config.json", 200) in hub_server.requests

    hub_server.stop()
    seen = len(hub_server.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the variable alone, read at call time
    start = time.perf_counter()
    again = load_model("org/tiny")
    hub_server.env.set_offline(True)
    pinned = load_model(f"org/tiny@{loaded.source_info['revision']}")
    assert time.perf_counter() - start < 10
    assert len(hub_server.requests) == seen
    assert same_weights(model, again)
    assert same_weights(model, pinned)
    assert again.source_info["sha256"] == loaded.source_info["sha256"]


def test_offline_cold_cache_unknown_repo_and_missing_files(hub_server, monkeypatch):
    checkpoint(hub_server.root / "org" / "tiny")
    with pytest.raises(CheckpointError, match="unknown repo 'org/nothere'"):
        load_model("org/nothere")
    with pytest.raises(CheckpointError, match="unknown revision 'v9'"):
        load_model("org/tiny@v9")
    hub_server.add_file("org/half", "config.json", (hub_server.root / "org/tiny/config.json").read_bytes())
    with pytest.raises(CheckpointError, match="file missing: model.safetensors .*only safetensors"):
        load_model("org/half")

    seen = len(hub_server.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cold cache, server up: offline must win, quickly
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="offline and not in cache.*HF_HUB_OFFLINE"):
        load_model("org/tiny")
    assert time.perf_counter() - start < 5
    assert len(hub_server.requests) == seen


def test_revision_pinning(hub_server):
    repo = hub_server.root / "org" / "tiny"
    first = checkpoint(repo, seed=1)
    sha_first = load_model("org/tiny").source_info["revision"]
    second = checkpoint(repo, seed=2)  # new weights on main: a new commit
    latest = load_model("org/tiny")
    assert latest.source_info["revision"] == hub_server.commit_of("org/tiny") != sha_first
    assert same_weights(second, latest)
    assert same_weights(first, load_model(f"org/tiny@{sha_first}"))
    assert same_weights(first, load_model("org/tiny", revision=sha_first))
    tagged = checkpoint(hub_server.root / "org" / "tiny@v1", seed=3)
    from_tag = load_model("org/tiny@v1")
    assert same_weights(tagged, from_tag)
    assert from_tag.source_info["requested_revision"] == "v1"
    with pytest.raises(CheckpointError, match="conflicting revisions"):
        load_model("org/tiny@v1", revision=sha_first)


def test_server_faults_resume_fallback_and_corruption(hub_server):
    model = checkpoint(hub_server.root / "org" / "tiny")
    hub_server.inject("drop", filename="model.safetensors")  # connection dies mid-body: huggingface_hub retries
    assert same_weights(model, load_model("org/tiny"))
    assert sum(m == "GET" and p.endswith("model.safetensors") for m, p, _ in hub_server.requests) == 2
    commit = hub_server.commit_of("org/tiny")
    ranged = urllib.request.Request(f"{hub_server.url}/org/tiny/resolve/{commit}/config.json",
                                    headers={"Range": "bytes=2-9"})  # small files are re-fetched whole; check Range
    with urllib.request.urlopen(ranged) as reply:
        config = (hub_server.root / "org/tiny/config.json").read_bytes()
        assert reply.status == 206
        assert reply.read() == config[2:10]
        assert reply.headers["Content-Range"] == f"bytes 2-9/{len(config)}"
    hub_server.inject("status", status=500, times=None)  # Hub down, files cached: served from the cache
    assert same_weights(model, load_model("org/tiny"))
    hub_server.clear_faults()
    checkpoint(hub_server.root / "org" / "bad")
    hub_server.inject("corrupt", filename="model.safetensors")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_model("org/bad")


# ----- hostile configs ---------------------------------------------------------------------------
HOSTILE_CONFIGS = {
    "unknown arch": ({"arch": "transformer"}, "unknown architecture 'transformer'"),
    "extra key": ({"trust_remote_code": True}, "unknown config keys: trust_remote_code"),
    "huge d_model": ({"d_model": 10**9}, r"d_model=1000000000 is above the limit of 1024"),
    "huge n_layers": ({"n_layers": 10**6}, r"n_layers=1000000 is above the limit of 16"),
    "huge d_state": ({"d_state": 10**7}, r"d_state=10000000 is above the limit of 256"),
    "wrong type": ({"dt_min": "tiny"}, "invalid config.json"),
}
RAW_CONFIGS = {
    "not json": (b"{'arch': 's4'", "config.json is not valid JSON"),
    "nan": (b'{"arch": "s4", "dt_min": NaN}', "NaN is not valid JSON"),
    "overflow": (b'{"arch": "s4", "dt_max": 1e999}', "1e999 is not finite"),
    "duplicate key": (b'{"arch": "s4", "arch": "mamba"}', "duplicate key 'arch'"),
    "not an object": (b'["s4"]', "must hold a JSON object, got list"),
    "oversized": (b'{"arch": "s4"' + b" " * 70_000 + b"}", "over the 65536-byte limit"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CONFIGS) + list(RAW_CONFIGS))
def test_hostile_config_is_rejected_before_anything_is_built(case, tmp_path):
    checkpoint(tmp_path)  # valid weights beside the config: the config alone must stop the load
    if case in HOSTILE_CONFIGS:
        change, message = HOSTILE_CONFIGS[case]
        config = {**json.loads((tmp_path / "config.json").read_text()), **change}
        (tmp_path / "config.json").write_text(json.dumps(config))
    else:
        raw, message = RAW_CONFIGS[case]
        (tmp_path / "config.json").write_bytes(raw)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        load_model(tmp_path)
    assert time.perf_counter() - start < 2


def test_over_budget_config_is_rejected_without_allocating(tmp_path, hub_server):
    checkpoint(tmp_path / "warm")
    load_model(tmp_path / "warm")  # the first meta-device build imports torch internals: keep it out of the peak
    # the largest Mamba the bounds allow: ~1 GB of float32 if it were ever allocated
    config = {**tiny_model("mamba").config.to_dict(), "d_model": 1024, "n_layers": 16, "d_state": 256,
              "expand": 4, "image_size": 32, "tokenizer": "patch"}
    hub_server.add_file("org/huge", "config.json", json.dumps(config))
    hub_server.add_file("org/huge", "model.safetensors", b"\0" * 64)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="over the parameter budget"):
        load_model("org/huge")
    assert time.perf_counter() - start < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before < 150e6
    assert not any("model.safetensors" in path for _, path, _ in hub_server.requests)  # never fetched
    with pytest.raises(ConfigError, match="over the parameter budget"):
        load_model(tmp_path / "warm", max_parameters=100)


def test_oversized_weights_are_not_downloaded(hub_server):
    checkpoint(hub_server.root / "org" / "big")
    hub_server.add_file("org/big", "model.safetensors", b"\0" * (3 << 20))  # 3 MB for a ~1 KB model
    with pytest.raises(CheckpointError, match="over the .*-byte limit"):
        load_model("org/big")
    assert not any(m == "GET" and "model.safetensors" in p for m, p, _ in hub_server.requests)


# ----- hostile weights ---------------------------------------------------------------------------
def _int64(t):
    name = first_float(t)
    t[name] = t[name].to(torch.int64)


def _shape(t):
    name = first_float(t)
    t[name] = torch.zeros(t[name].numel() + 1)


def _nan(t):
    t[first_float(t)].view(-1)[0] = float("nan")


def _inf(t):
    t[first_float(t)].view(-1)[-1] = float("inf")


HOSTILE_TENSORS = {
    "int64": (_int64, r"wrong dtype for \S+: expected F32 or F16 or BF16, got I64"),
    "shape": (_shape, r"shape mismatch for \S+: expected \[.*\], got \[\d+\]"),
    "missing": (lambda t: t.pop(first_float(t)), r"missing tensors: \S+"),
    "unexpected": (lambda t: t.update(evil=torch.zeros(2)), "unexpected tensors: evil"),
    "nan": (_nan, r"non-finite values in \S+: 1 NaN"),
    "inf": (_inf, r"non-finite values in \S+: 0 NaN and 1 infinite"),
}


@pytest.mark.parametrize("case", HOSTILE_TENSORS)
def test_hostile_tensors_are_rejected(case, tmp_path):
    checkpoint(tmp_path)
    edit, message = HOSTILE_TENSORS[case]
    rewrite_weights(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path)


def test_half_precision_weights_are_accepted_as_float32(tmp_path):
    checkpoint(tmp_path)
    rewrite_weights(tmp_path, lambda t: t.update({k: v.half() for k, v in t.items() if v.is_floating_point()}))
    halves = load_file(tmp_path / "model.safetensors")
    loaded = load_model(tmp_path)
    assert all(torch.equal(v, halves[k].float()) for k, v in loaded.state_dict().items())


def test_malformed_safetensors_files(tmp_path):
    checkpoint(tmp_path)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    cases = {
        "truncated": (good[:-10], "model.safetensors is truncated: the header describes"),
        "huge header": (struct.pack("<Q", 1 << 62) + good[8:], "header claims 4611686018427387904 bytes"),
        "trailing bytes": (good + b"junk", "4 unexpected bytes after the tensor data"),
        "pickle renamed": (pickle.dumps({"w": [1.0] * 64}), "not a valid safetensors file"),
        "empty": (b"", "truncated: 0 bytes"),
    }
    for data, message in cases.values():
        weights.write_bytes(data)
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path)


class _Payload:
    """Unpickling this creates `marker`: proof that a loader executed pickle code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_checkpoints_are_never_unpickled(tmp_path, hub_server):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()  # the payload is live: unpickling it has a visible side effect
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"state_dict": _Payload(marker)})
    repo = tmp_path / "local"
    checkpoint(repo)
    (repo / "model.safetensors").unlink()
    (repo / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(CheckpointError, match="only safetensors weights are accepted; found pytorch_model.bin"):
        load_model(repo)
    (tmp_path / "model.pt").write_bytes(payload)
    with pytest.raises(CheckpointError, match="pickle file; only safetensors"):
        load_model(tmp_path / "model.pt")
    hub_server.add_file("org/pickled", "config.json", (repo / "config.json").read_bytes())
    hub_server.add_file("org/pickled", "pytorch_model.bin", payload)
    with pytest.raises(CheckpointError, match="only safetensors weights are accepted"):
        load_model("org/pickled")
    assert not marker.exists()
    assert not any("pytorch_model.bin" in path for _, path, _ in hub_server.requests)


# ----- names, paths and traversal ----------------------------------------------------------------
@pytest.mark.parametrize("source", ["org/../../etc", "org/na..me", "../org/name", "org/name/extra", "org\\name",
                                    "org/tiny@../../../evil", "org/tiny@main/../../evil", "org/tiny@/abs",
                                    "org/tiny@refs/../x", "org/tiny@v1\n", "-org/name", "org/name.git"])
def test_bad_repo_ids_and_revisions_never_reach_the_network(source, hub_server, tmp_path):
    checkpoint(hub_server.root / "org" / "tiny")
    with pytest.raises(CheckpointError, match="invalid|not a shipped checkpoint|no such checkpoint directory"):
        load_model(source)
    assert hub_server.requests == []
    assert not list(tmp_path.rglob("evil"))
    assert not list(tmp_path.rglob("x"))


def test_symlinks_out_of_the_checkpoint_directory_are_refused(tmp_path):
    outside = tmp_path / "outside"
    checkpoint(outside)
    inside = tmp_path / "inside"
    inside.mkdir()
    (inside / "config.json").write_bytes((outside / "config.json").read_bytes())
    os.symlink(outside / "model.safetensors", inside / "model.safetensors")
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        load_model(inside)
    (inside / "model.safetensors").unlink()
    (inside / "model.safetensors").symlink_to("real.safetensors")  # a symlink within the directory is fine
    (inside / "real.safetensors").write_bytes((outside / "model.safetensors").read_bytes())
    assert same_weights(load_model(outside), load_model(inside))


def test_list_and_resolve_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    model = checkpoint(root / "mnist" / "s4-pgd")
    (root / "mnist" / "s4-pgd" / "metrics.json").write_text('{"clean_acc": 0.97}')
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text('{"arch": "nope"}')
    (root / "notes").mkdir()
    with pytest.warns(UserWarning, match="skipping checkpoint .*broken"):
        found = list_checkpoints(root)
    assert [c["name"] for c in found] == ["mnist/s4-pgd"]
    assert found[0]["config"] == model.config.to_dict()
    assert found[0]["metrics"] == {"clean_acc": 0.97}
    assert found[0]["has_weights"]
    directory = str((root / "mnist" / "s4-pgd").resolve())
    assert resolve_checkpoint("mnist/s4-pgd", root) == directory
    assert resolve_checkpoint(directory, root) == directory
    assert resolve_checkpoint("org/model@v1", root) == "org/model@v1"
    with pytest.raises(CheckpointError, match="not a shipped checkpoint"):
        resolve_checkpoint("no-such-name", root)
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        resolve_checkpoint("../mnist/s4-pgd", root)


def test_half_files_of_a_killed_download_are_removed_by_the_next_one(hub_server):
    model = checkpoint(hub_server.root / "org" / "tiny")
    etag = hashlib.sha256((hub_server.root / "org/tiny/model.safetensors").read_bytes()).hexdigest()
    blobs = hub_server.env.cache_dir / "models--org--tiny" / "blobs"
    blobs.mkdir(parents=True)
    # what huggingface_hub leaves when its process is SIGKILLed mid-transfer: it never resumes these
    killed = [blobs / f"{etag}.1a2b3c4d.incomplete", blobs / f"{etag}.incomplete"]
    for path in killed:
        path.write_bytes(b"half of the weights")
    other = blobs / ("0" * 64 + ".5e6f7a8b.incomplete")  # another blob's: not this download's to remove
    other.write_bytes(b"someone else's")
    assert same_weights(model, load_model("org/tiny"))
    assert [p.name for p in killed if p.exists()] == []
    assert other.exists()
