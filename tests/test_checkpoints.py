"""Every shipped checkpoint loads through the safe path, matches its config, and reproduces its card."""
import json
from pathlib import Path

from ssm_lab.cards import SAMPLE_N, SAMPLE_SEED
from ssm_lab.data import bundled_sample, load_dataset, sample_indices
from ssm_lab.evaluate import predict
from ssm_models import ModelConfig
from ssm_models.hub import list_checkpoints, load_model

ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
CARDED = [c for c in list_checkpoints(ROOT) if c["metrics"] and not c["name"].endswith("/last")]


def test_every_shipped_checkpoint_reproduces_its_card():
    assert len(CARDED) >= 2
    for entry in CARDED:
        _check(entry)


def shipped_files(folder: Path) -> list[Path]:
    """What git ships of a checkpoint folder: not the resume states and locks a training or card run leaves
    (gitignored: train_state.pt, .card_state/, .train.lock)."""
    return [f for f in folder.rglob("*") if f.is_file() and not f.name.startswith("train_state.pt")
            and not any(part.startswith(".") for part in f.relative_to(folder).parts)]


def _check(entry):
    path = Path(entry["path"])
    model = load_model(path)
    config = json.loads((path / "config.json").read_text())
    assert model.config == ModelConfig.from_dict(config)
    assert sum(f.stat().st_size for f in shipped_files(path)) < 5 * 2**20  # small enough to ship
    metrics = entry["metrics"]
    x, y = bundled_sample(metrics["dataset"]).tensors()  # every machine has it, so every card is checked
    correct = int((predict(model, x) == y).sum())
    recorded = metrics["clean_bundled_sample"]["correct"]
    # a few borderline images may flip between CPUs (float summation order), never more
    assert abs(correct - recorded) <= 3, f"{entry['name']}: {correct} correct on the sample, card says {recorded}"
    test = load_dataset(metrics["dataset"], "test")
    if len(test) == metrics["clean"]["n"]:  # the full test set is here too (a data folder or the Hub)
        x, y = test.tensors(sample_indices(test, SAMPLE_N, SAMPLE_SEED))
        accuracy = float((predict(model, x) == y).float().mean())
        assert abs(accuracy - metrics["clean_sample"]["accuracy"]) <= 0.01, f"{entry['name']}: {accuracy}"
    card = (path / "README.md").read_text()
    assert f"{metrics['clean']['accuracy']:.2%}" in card
    assert f"n={metrics['clean']['n']}" in card
    assert (path / "last" / "model.safetensors").exists()
    assert (path / "curves.json").exists()
