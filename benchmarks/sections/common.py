"""What every section needs: the run settings, the reproducing command, models and labelled images."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..harness import load_average
from ..results import Section

REPO = Path(__file__).resolve().parents[2]
SHIPPED_S4 = REPO / "checkpoints" / "mnist-s4-st"
ROBUST_S4 = REPO / "checkpoints" / "mnist-s4-ads-pgdat"  # most images survive PGD: every step is spent
# the shipped small S4 (patch tokens, L = 49): used when its checkpoint is missing
SHIPPED_S4_CONFIG = dict(tokenizer="patch", patch_size=4, d_model=64, n_layers=2, d_state=32, dt_min=0.01,
                         dt_max=1.0, activation="gelu")
QUICK_CONFIG = dict(d_model=8, n_layers=1, d_state=4, image_size=8)

# an L-inf radius of a quarter of one grey level: no image flips, so every step of every attack is spent
UNBREAKABLE_EPS = 1 / 1020


@dataclass
class Settings:
    quick: bool
    threads: int

    def command(self, key: str) -> str:
        quick = " --quick" if self.quick else ""
        return f".venv/bin/python -m benchmarks --only {key} --threads {self.threads}{quick}"

    def repeats(self, full: int, quick: int = 1) -> int:
        return quick if self.quick else full


def new_section(key: str, title: str, settings: Settings) -> Section:
    return Section(key=key, title=title, command=settings.command(key), load_average=load_average(),
                   measured_utc=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                   quick=settings.quick, threads=settings.threads)


class Stopwatch:
    """Section wall time, stored on the section when the block ends."""

    def __init__(self, section: Section):
        self.section = section

    def __enter__(self):
        self.start = time.perf_counter()
        return self.section

    def __exit__(self, *exc):
        self.section.seconds = time.perf_counter() - self.start


def own_labels(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own predictions: every image starts correctly classified, so attacks do their full work."""
    with torch.no_grad():
        return model.eval()(x).argmax(dim=1)  # (N,)


def shipped_s4(settings: Settings, checkpoint: Path = SHIPPED_S4):
    """(model, description): a shipped MNIST S4 checkpoint, else that configuration randomly initialised."""
    from ssm_models import create_model

    if settings.quick:
        return create_model("s4", **{**SHIPPED_S4_CONFIG, **QUICK_CONFIG, "patch_size": 2}), "tiny random S4"
    if (checkpoint / "model.safetensors").exists():
        try:
            from ssm_models.hub import load_model

            return load_model(str(checkpoint)), f"shipped checkpoint {checkpoint.relative_to(REPO)}"
        except Exception as error:  # noqa: BLE001 - a checkpoint being rewritten must not stop the suite
            reason = f"checkpoint unreadable ({type(error).__name__}: {error})"
    else:
        reason = "no shipped checkpoint"
    torch.manual_seed(0)
    return create_model("s4", **SHIPPED_S4_CONFIG), f"shipped configuration, randomly initialised ({reason})"


def mnist_batch(n: int, settings: Settings, model) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first n MNIST test images and labels (quick mode: random images labelled by the model)."""
    cfg = model.config
    if settings.quick:
        x = torch.rand(n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0))
        return x, own_labels(model, x), f"{n} random images labelled by the model's own predictions"
    from ssm_lab.data import load_dataset

    x, y = load_dataset("mnist", "test").tensors(list(range(n)))
    return x, y, f"the first {n} MNIST test images with their true labels"
