"""Seeded, resumable training with per-epoch curves and best (validation PGD-10) / last checkpoints."""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ssm_models import create_model
from ssm_models.atomic import atomic_write, remove_stale_temporaries
from ssm_models.config import ModelConfig
from ssm_models.families import arch_defaults, list_models
from ssm_models.hub import save_pretrained

from . import distributed
from .attacks.base import MAX_STEPS, check_number
from .budget import training_passes, warmup_passes
from .data import dataset_info, load_dataset, sample_indices
from .methods import METHODS, MethodStep, ThreatModel, pgd_linf
from .run_lock import exclusive

STATE_FILE = "train_state.pt"
LOCK_FILE = ".train.lock"
MAX_EPOCHS = 10_000
MAX_BATCH = 4096


@dataclass
class TrainConfig:
    arch: str = "s4"
    dataset: str = "mnist"
    method: str = "st"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 2e-4
    eps: float | None = None  # None: the dataset's standard budget (MNIST 0.3, CIFAR-10 8/255)
    step_size: float | None = None
    attack_steps: int = 10
    beta: float = 6.0
    replays: int = 4
    yopo_outer: int = 5
    yopo_inner: int = 3
    augment: bool = True
    seed: int = 0
    curve_points: int = 500  # fixed train/test subsets on which the eight curves are measured each epoch
    val_points: int = 500
    train_limit: int | None = None  # train on a stratified seeded sample of N images (smoke tests, CPU budgets)
    eps_warmup_epochs: float = 0.0  # ramp the training eps (and step) linearly from 0 over this many epochs
    # FreeAT at PGD-AT's budget: `epochs` and `eps_warmup_epochs` then count optimiser steps in PGD-AT epochs, and
    # each is divided by the replay count m (Shafahi et al. train N_ep / m epochs), since every pass over the data
    # takes m optimiser steps per minibatch; see `passes`
    freeat_equal_budget: bool = False
    data_dir: str | None = None
    model: dict = field(default_factory=dict)  # ModelConfig overrides (d_model, n_layers, tokenizer, ads, ...)

    def validate(self) -> "TrainConfig":
        """Every field within sane bounds and the model buildable, before any file or folder is written."""
        if self.arch not in list_models():
            raise ValueError(f"unknown architecture {self.arch!r}; known: {', '.join(list_models())}")
        if self.dataset not in ("mnist", "cifar10"):
            raise ValueError(f"unknown dataset {self.dataset!r}; choose mnist or cifar10")
        if self.method not in METHODS:
            raise ValueError(f"unknown training method {self.method!r}; choose from {', '.join(METHODS)}")
        for name, hi in (("epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH), ("attack_steps", MAX_STEPS),
                         ("replays", 64), ("yopo_outer", MAX_STEPS), ("yopo_inner", MAX_STEPS),
                         ("curve_points", 100_000), ("val_points", 100_000)):
            check_number(name, getattr(self, name), hi=hi, integer=True, positive=True)
        check_number("lr", self.lr, hi=1.0, positive=True)
        check_number("weight_decay", self.weight_decay, lo=0, hi=1.0)
        check_number("beta", self.beta, lo=0, hi=1000.0)  # TRADES: a negative weight would reward instability
        check_number("eps_warmup_epochs", self.eps_warmup_epochs, lo=0, hi=MAX_EPOCHS)
        check_number("seed", self.seed, integer=True, lo=0)
        if self.eps is not None:
            check_number("eps", self.eps, lo=0, hi=1.0)
        if self.step_size is not None:
            check_number("step_size", self.step_size, hi=1.0, positive=True)
        if not isinstance(self.freeat_equal_budget, bool):
            raise ValueError(f"freeat_equal_budget must be true or false, not {self.freeat_equal_budget!r}")
        if self.freeat_equal_budget and self.method != "freeat":
            raise ValueError(f"freeat_equal_budget divides FreeAT's epochs by its replay count; it does not apply to "
                             f"method {self.method!r}")
        if self.train_limit is not None:
            check_number("train_limit", self.train_limit, integer=True, positive=True)
        info = dataset_info(self.dataset)
        ModelConfig.from_dict({**arch_defaults(self.arch), **self.model, "arch": self.arch,
                               "in_channels": info.channels, "image_size": info.image_size,
                               "num_classes": len(info.classes)})
        return self

    @property
    def passes(self) -> int:
        """Passes over the training set that `train` runs (rows of its history)."""
        return training_passes(self.epochs, self.replays, self.freeat_equal_budget)

    @property
    def warmup_passes(self) -> float:
        return warmup_passes(self.eps_warmup_epochs, self.replays, self.freeat_equal_budget)


DEFAULT_THREAT = {name: (info.eps, info.pgd_step) for name, info in dataset_info().items()}  # (eps, PGD step)


def training_record(dataset: str, train_set, val_set) -> dict:
    """What the card says the model learned from: source and sizes, and the Hub repo when the images came from it."""
    hub = dataset_info(dataset).hub
    from_hub = hub is not None and (train_set.detail or "").startswith(f"{hub.repo_id}@")
    return {"source": train_set.source, "train": len(train_set), "val": len(val_set),
            **({"hub_repo": hub.repo_id, "hub_revision": train_set.detail.split("@", 1)[1]} if from_hub else {})}


def threat_model(cfg: TrainConfig) -> ThreatModel:
    eps, step = DEFAULT_THREAT[cfg.dataset]
    eps = cfg.eps if cfg.eps is not None else eps
    step = cfg.step_size if cfg.step_size is not None else step
    return ThreatModel(eps=eps, step_size=step, steps=cfg.attack_steps, beta=cfg.beta, replays=cfg.replays,
                       yopo_outer=cfg.yopo_outer, yopo_inner=cfg.yopo_inner)


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int, flip: bool) -> torch.Tensor:
    """Random translation by up to max_shift pixels (zero padding), plus horizontal flips for natural images."""
    b, _, s, _ = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (B, C, S+2m, S+2m)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)
    out = torch.stack([padded[i, :, dy:dy + s, dx:dx + s] for i, (dy, dx) in enumerate(offsets.tolist())])
    if flip:
        mask = torch.rand(b, generator=generator) < 0.5
        out[mask] = out[mask].flip(-1)
    return out


def measure(model, x, y, tm: ThreatModel, seed: int, batch_size: int = 250) -> dict:
    """Clean and PGD-10 accuracy and loss on (x, y), PGD-10 being the evaluation attack (an image counts as broken
    at its first successful iterate, and the loss is measured there)."""
    totals = {"clean_acc": 0.0, "clean_loss": 0.0, "adv_acc": 0.0, "adv_loss": 0.0}
    eval_tm = ThreatModel(eps=tm.eps, step_size=tm.step_size if tm.steps >= 10 else tm.eps / 4, steps=10)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        x_adv = pgd_linf(model, xb, yb, eval_tm, generator, early_stop=True)  # the reported PGD-10
        with torch.no_grad():
            for prefix, inputs in (("clean", xb), ("adv", x_adv)):
                logits = model(inputs)
                totals[f"{prefix}_loss"] += F.cross_entropy(logits, yb, reduction="sum").item()
                totals[f"{prefix}_acc"] += (logits.argmax(1) == yb).sum().item()
    return {k: v / len(x) for k, v in totals.items()}


def train(cfg: TrainConfig, out_dir: str | Path, log: Callable[[str], None] = print) -> dict:
    """Train, writing `<out>/` (best) and `<out>/last/`, curves.json and a resumable state file.

    A second run on the same folder while one is alive is refused (`RunLockedError`) rather than interleaved."""
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # only rank 0 writes, so only it locks: the other ranks of a torchrun job share its folder
    lock = exclusive(out / LOCK_FILE, f"training folder {out}") if distributed.is_main() else contextlib.nullcontext()
    with lock:
        if distributed.is_main():  # a killed run's half-written temporaries: ours to remove now we hold the lock
            for folder in (out, out / "last"):
                remove_stale_temporaries(folder)
        return _train(cfg, out, log)


def _train(cfg: TrainConfig, out: Path, log: Callable[[str], None]) -> dict:
    torch.manual_seed(cfg.seed)
    train_set = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir)
    val_set = load_dataset(cfg.dataset, "val", data_dir=cfg.data_dir)
    test_set = load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir)
    for warning in {d.warning for d in (train_set, val_set, test_set) if d.warning}:
        log(f"warning: {warning}")
    # the splits are stored class by class, so a subset is a stratified seeded sample, never the first N
    limit = cfg.train_limit
    x_train, y_train = train_set.tensors(None if limit is None else sample_indices(train_set, limit, cfg.seed).tolist())
    x_val, y_val = val_set.tensors(sample_indices(val_set, cfg.val_points, cfg.seed).tolist())
    x_test, y_test = test_set.tensors()
    pick = torch.Generator().manual_seed(1234)
    curve_train = torch.randperm(len(x_train), generator=pick)[: cfg.curve_points]
    curve_test = torch.randperm(len(x_test), generator=pick)[: cfg.curve_points]

    c, s = x_train.shape[1], x_train.shape[-1]
    meta = {"dataset": cfg.dataset, "method": cfg.method, "train_config": asdict(cfg),
            "train_data": training_record(cfg.dataset, train_set, val_set)}
    model = create_model(cfg.arch, in_channels=c, image_size=s, num_classes=len(train_set.classes),
                         **cfg.model, meta=meta)
    tm = threat_model(cfg)
    meta["threat_model"] = {"norm": "Linf", "eps": tm.eps, "step_size": tm.step_size, "steps": tm.steps}
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.passes)
    world, rank = distributed.world_size(), distributed.rank()
    main = rank == 0
    data_gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best_acc, best_score, start_epoch, elapsed = -1.0, (-1.0,), 0, 0.0

    state_path = out / STATE_FILE
    if state_path.exists():  # resume: our own file, still loaded without unpickling arbitrary objects
        state = torch.load(state_path, weights_only=True)
        if not _same_config(json.loads(state["config"]), cfg):
            raise ValueError(f"{state_path} belongs to a different training configuration; remove it or change --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_gen"])
        history, best_acc = json.loads(state["history"]), state["best_acc"]
        best_score = tuple(state.get("best_score", (best_acc, -1.0)))
        if cfg.method == "st" and len(best_score) == 2:  # written under the older (robust, clean) rule
            best_score = best_score[1:]
        start_epoch, elapsed = state["epoch"], state["elapsed"]
        if "torch_rng" in state:  # anything drawing from the global generator (dropout) continues its stream
            torch.set_rng_state(state["torch_rng"])
        if state.get("best_epoch"):  # every later save of `last/` records it, as in an uninterrupted run
            model.config.meta.update(best_epoch=state["best_epoch"])
        log(f"resuming from epoch {start_epoch}")
    # Wrapped after a resume so DDP starts every rank from rank 0's weights; the methods attack the plain module.
    step_fn = MethodStep(cfg.method, distributed.wrap(model), optimizer, tm, seed=cfg.seed)
    if start_epoch:
        step_fn.generator.set_state(state["attack_gen"])
        step_fn.free_delta = state.get("free_delta")

    # Each rank trains on an equal share of the epoch's permutation (wrapped around to equal length, as
    # torch's DistributedSampler does), so all ranks take the same number of steps and draws from data_gen.
    shard_len = math.ceil(len(x_train) / world)
    n_batches = math.ceil(shard_len / cfg.batch_size)
    for epoch in range(start_epoch, cfg.passes):
        t0 = time.time()
        model.train()
        order = torch.randperm(len(x_train), generator=data_gen)
        if world > 1:
            order = order.repeat(2)[: shard_len * world][rank::world]  # (shard_len,)
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{cfg.passes}", leave=False,
                   disable=not os.isatty(2))
        running_loss = 0.0
        for b in bar:
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if cfg.augment:
                xb = random_shift(xb, data_gen, max_shift=2 if cfg.dataset == "mnist" else 4,
                                  flip=cfg.dataset == "cifar10")
            if cfg.warmup_passes > 0:  # from-scratch AT at a large eps collapses to chance without a ramp
                ramp = min(1.0, (epoch + b / n_batches) / cfg.warmup_passes)
                step_fn.tm = replace(tm, eps=tm.eps * ramp, step_size=tm.step_size * ramp)
            loss, _, _ = step_fn(xb, yb)
            running_loss += loss
            bar.set_postfix(loss=f"{running_loss / (b + 1):.3f}")
        scheduler.step()
        running_loss = distributed.mean_across_ranks(running_loss)
        train_time = time.time() - t0
        measured = None
        if main:  # the other ranks wait in the broadcast
            measured = (measure(model, x_train[curve_train], y_train[curve_train], tm, seed=epoch),
                        measure(model, x_test[curve_test], y_test[curve_test], tm, seed=epoch),
                        measure(model, x_val, y_val, tm, seed=epoch))
        train_m, test_m, val_m = distributed.broadcast_object(measured)
        elapsed += time.time() - t0
        row = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], "train_loss_running": running_loss / n_batches,
               "train_time_s": round(train_time, 2), **{f"train_{k}": v for k, v in train_m.items()},
               **{f"test_{k}": v for k, v in test_m.items()}, **{f"val_{k}": v for k, v in val_m.items()}}
        history.append(row)
        model.config.meta.update(train_wall_time_s=round(elapsed, 1), epochs_trained=epoch + 1)
        if main:
            save_pretrained(model, out / "last")
        # Standard training is selected on clean accuracy: its PGD accuracy at the threat model's eps is noise
        # around 0. Otherwise robust accuracy first, ties to the better clean accuracy.
        score = (val_m["clean_acc"],) if cfg.method == "st" else (val_m["adv_acc"], val_m["clean_acc"])
        if score > best_score:
            best_score = score
            best_acc = val_m["adv_acc"]
            model.config.meta.update(best_epoch=epoch + 1)
            if main:
                save_pretrained(model, out)
        if not main:
            continue
        log(f"epoch {epoch + 1}/{cfg.passes} {train_time:.0f}s loss {row['train_loss_running']:.3f} "
            f"val clean {val_m['clean_acc']:.3f} val pgd10 {val_m['adv_acc']:.3f} "
            f"test clean {test_m['clean_acc']:.3f} test pgd10 {test_m['adv_acc']:.3f}")
        curves = {"points": {"train": cfg.curve_points, "test": cfg.curve_points, "val": len(x_val)},
                  "note": "train/test curves on fixed random subsets; best checkpoint chosen on val PGD-10",
                  "history": history}
        atomic_write(out / "curves.json", json.dumps(curves, indent=1))
        snapshot = {"config": json.dumps(asdict(cfg), sort_keys=True), "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "data_gen": data_gen.get_state(), "attack_gen": step_fn.generator.get_state(),
                    **({} if step_fn.free_delta is None else {"free_delta": step_fn.free_delta}),
                    "torch_rng": torch.get_rng_state(), "history": json.dumps(history), "best_acc": best_acc,
                    "best_score": list(best_score), "best_epoch": model.config.meta.get("best_epoch", 0),
                    "epoch": epoch + 1, "elapsed": elapsed}
        atomic_write(state_path, lambda stream: torch.save(snapshot, stream))
    if main:
        finalize_meta(out, history, elapsed)
    distributed.barrier()  # nobody returns before rank 0 has written everything
    return {"history": history, "best_val_adv_acc": best_acc, "wall_time_s": elapsed}


def finalize_meta(out: Path, history: list[dict], elapsed: float) -> None:
    """The best checkpoint was saved mid-run: record the whole run's length and wall time in its config.json."""
    path = Path(out) / "config.json"
    config = json.loads(path.read_text())
    config["meta"].update(epochs_trained=len(history), train_wall_time_s=round(elapsed, 1))
    atomic_write(path, json.dumps(config, indent=2, allow_nan=False) + "\n")


def _same_config(stored: dict, cfg: TrainConfig) -> bool:
    """Equal, ignoring fields added to TrainConfig after the state was written that still hold their default."""
    current = json.loads(json.dumps(asdict(cfg)))
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    for key in set(current) - set(stored):
        if current[key] == defaults[key]:
            del current[key]
    return stored == current
