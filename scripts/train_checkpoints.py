"""Train (or resume) every shipped checkpoint, then measure its card metrics. Usage:

    python scripts/train_checkpoints.py [--only NAME ...] [--worker K --workers N] [--cards]

Each run is resumable (state file in its directory); finished runs are skipped.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssm_lab.allocator import keep_freed_memory
from ssm_lab.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent

# Short patch sequences train fast on a CPU; dt is scaled to their length (the LegS default 1e-3..1e-1 suits
# L = 784 pixels), and the S4/DSS/S5 blocks use the standard GELU (the reference never calls it; see the cards).
MNIST = {"tokenizer": "patch", "patch_size": 4, "d_model": 64, "n_layers": 2, "dt_min": 0.01, "dt_max": 1.0,
         "activation": "gelu"}
CIFAR = {"tokenizer": "patch", "patch_size": 4, "d_model": 96, "n_layers": 3, "dt_min": 0.01, "dt_max": 1.0,
         "activation": "gelu"}
STATE = {"s4": {"d_state": 32}, "dss": {"d_state": 32}, "s5": {"d_state": 32}, "mamba": {"d_state": 16},
         "mega": {"d_state": 16, "mega_z_dim": 32, "mega_hidden": 64, "mega_ema_dim": 8}}


def run(name, arch, method, dataset="mnist", epochs=None, ads=None, ads_bias=False, d_model=None, **extra):
    model = dict(MNIST if dataset == "mnist" else CIFAR, **STATE[arch])
    if d_model:
        model["d_model"] = d_model
    if ads:
        model["ads"] = ads
    if ads_bias:
        model["ads_bias"] = True
    adversarial = method != "st"
    if adversarial and dataset == "mnist":  # PGD-5 with step 0.1 instead of PGD-10 / 0.04: half the CPU cost
        extra = {"attack_steps": 5, "step_size": 0.1, "eps_warmup_epochs": 5, **extra}
    epochs = epochs or (15 if adversarial else 20)
    lr = extra.pop("lr", 2e-3 if adversarial else 1e-2)
    return name, TrainConfig(arch=arch, dataset=dataset, method=method, epochs=epochs, lr=lr,
                             batch_size=64, curve_points=300, model=model, **extra)


RUNS = dict([
    run("mnist-s4-st", "s4", "st", epochs=40),  # the 97% floor needs more epochs than the 95% ones
    run("mnist-dss-st", "dss", "st", epochs=40),  # 96.9%; a 60-epoch run reached only 96.3%
    run("mnist-s5-st", "s5", "st", epochs=40),  # 94.8% after 20
    run("mnist-mamba-st", "mamba", "st", epochs=40),
    run("mnist-mega-st", "mega", "st"),
    # every MNIST adversarial run: 30 epochs, eps ramped over the first 10; on 5,000 digits (78 steps an epoch)
    # Mega still sat at 22% clean after 10 epochs
    run("mnist-s4-pgdat", "s4", "pgd-at", epochs=30, eps_warmup_epochs=10),
    run("mnist-dss-pgdat", "dss", "pgd-at", epochs=30, eps_warmup_epochs=10),
    run("mnist-s4-ads-pgdat", "s4", "pgd-at", ads="relu", epochs=30, eps_warmup_epochs=10),
    run("mnist-dss-ads-pgdat", "dss", "pgd-at", ads="relu", epochs=30, eps_warmup_epochs=10),
    # the same as mnist-s4-ads-pgdat at twice the width: at width 64 its clean accuracy levels off near 94.5%
    # (validation) under PGD-AT, short of the 95% floor
    run("mnist-s4-ads-pgdat-w128", "s4", "pgd-at", ads="relu", epochs=30, eps_warmup_epochs=10, d_model=128),
    run("mnist-mega-pgdat", "mega", "pgd-at", epochs=30, eps_warmup_epochs=10),
    run("mnist-s5-pgdat", "s5", "pgd-at", epochs=30, eps_warmup_epochs=10),
    run("mnist-mamba-pgdat", "mamba", "pgd-at", epochs=30, eps_warmup_epochs=10),
    # one model per remaining method, on S4
    run("mnist-s4-trades", "s4", "trades", beta=1.0, epochs=30, eps_warmup_epochs=10),
    # FreeAT at PGD-AT's budget of optimiser steps (30 epochs / m = 4 replays -> 8 passes) and YOPO as in Zhang et
    # al. (first-layer update included), for every family
    *(run(f"mnist-{arch}-freeat", arch, "freeat", epochs=30, eps_warmup_epochs=10, freeat_equal_budget=True)
      for arch in ("s4", "dss", "s5", "mega", "mamba")),
    *(run(f"mnist-{arch}-yopo", arch, "yopo", epochs=30, eps_warmup_epochs=10)
      for arch in ("s4", "dss", "s5", "mega")),
    # at lr 2e-3 Mamba's YOPO run fell to one class at epoch 9 as its eps neared 0.3 (loss 2.30 from then on), and
    # the constant model's 10% "robust" accuracy won the best-epoch choice. At half the rate it still falls, after
    # epoch 11, but its epoch 10 (val PGD-10 17%) beats chance and is kept; S5's and Mega's YOPO runs fall too
    run("mnist-mamba-yopo", "mamba", "yopo", epochs=30, eps_warmup_epochs=10, lr=1e-3),
    # the rest of the paper's Table 1 at this scale: TRADES for every other family, with S4's beta and budget
    *(run(f"mnist-{arch}-trades", arch, "trades", beta=1.0, epochs=30, eps_warmup_epochs=10)
      for arch in ("dss", "s5", "mega", "mamba")),
    # Table 2: AdS with each activation, and the official-repo bias variant, under PGD-AT for S4 and DSS
    *(run(f"mnist-{arch}-ads-{act}-pgdat", arch, "pgd-at", ads=act, epochs=30, eps_warmup_epochs=10)
      for arch in ("s4", "dss") for act in ("sigmoid", "tanh")),
    *(run(f"mnist-{arch}-ads-relu-bias-pgdat", arch, "pgd-at", ads="relu", ads_bias=True, epochs=30,
          eps_warmup_epochs=10) for arch in ("s4", "dss")),
    run("cifar10-s4-st", "s4", "st", dataset="cifar10", epochs=10),
    # Mamba's selective scan makes a CIFAR-10 step about 3x an S4 one here, hence 8 epochs; at lr 1e-2 it
    # stayed at chance, so 2e-3
    run("cifar10-mamba-st", "mamba", "st", dataset="cifar10", epochs=8, lr=2e-3),
    # FreeAT replays each minibatch m = 4 times, so 5 epochs cost 20 passes over the 50,000 images (Shafahi et
    # al. divide the epoch budget by m the same way); a CPU budget, stated in the cards
    run("cifar10-s4-freeat", "s4", "freeat", dataset="cifar10", epochs=5),
    run("cifar10-s4-ads-freeat", "s4", "freeat", dataset="cifar10", epochs=5, ads="relu"),
])


def finished(out: Path, cfg: TrainConfig) -> bool:
    curves = out / "curves.json"
    return curves.exists() and len(json.loads(curves.read_text())["history"]) >= cfg.passes


def main() -> None:
    keep_freed_memory()
    p = argparse.ArgumentParser()
    p.add_argument("--only", nargs="*")
    p.add_argument("--worker", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cards", action="store_true", help="measure card metrics after training")
    p.add_argument("--cards-only", action="store_true", help="measure card metrics of finished runs; train nothing")
    a = p.parse_args()
    names = a.only or list(RUNS)
    for i, name in enumerate(names):
        if i % a.workers != a.worker:
            continue
        out = ROOT / "checkpoints" / name
        cfg = RUNS[name]
        if not finished(out, cfg):
            if a.cards_only:
                continue
            print(f"== training {name}", flush=True)
            train(cfg, out, log=lambda m, n=name: print(f"[{n}] {m}", flush=True))
        if (a.cards or a.cards_only) and not (out / "metrics.json").exists():
            from ssm_lab.cards import card_metrics, write_card
            from ssm_models.hub import load_model

            print(f"== card metrics {name}", flush=True)
            metrics = card_metrics(load_model(out), cfg.dataset, log=lambda m, n=name: print(f"[{n}] {m}", flush=True))
            write_card(out, metrics)


if __name__ == "__main__":
    main()
