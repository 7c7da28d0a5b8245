"""Every shipped checkpoint loads through the safe path, matches its config, and reproduces its card."""
import json
from pathlib import Path

from ssm_lab.cards import SAMPLE_N, SAMPLE_SEED
from ssm_lab.data import load_dataset, sample_indices
from ssm_lab.evaluate import predict
from ssm_models import ModelConfig
from ssm_models.hub import list_checkpoints, load_model

ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
CARDED = [c for c in list_checkpoints(ROOT) if c["metrics"] and not c["name"].endswith("/last")]


def test_every_shipped_checkpoint_reproduces_its_card():
    assert len(CARDED) >= 2
    for entry in CARDED:
        _check(entry)


def _check(entry):
    path = Path(entry["path"])
    model = load_model(path)
    config = json.loads((path / "config.json").read_text())
    assert model.config == ModelConfig.from_dict(config)
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) < 5 * 2**20  # small enough to ship
    metrics = entry["metrics"]
    test = load_dataset(metrics["dataset"], "test")
    x, y = test.tensors(sample_indices(test, SAMPLE_N, SAMPLE_SEED))
    accuracy = float((predict(model, x) == y).float().mean())
    assert abs(accuracy - metrics["clean_sample"]["accuracy"]) <= 0.01
    card = (path / "README.md").read_text()
    assert f"{metrics['clean']['accuracy']:.2%}" in card and f"n={metrics['clean']['n']}" in card
    assert (path / "last" / "model.safetensors").exists() and (path / "curves.json").exists()
