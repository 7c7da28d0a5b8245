"""(Re)measure checkpoints' card metrics in place and rewrite their README cards. Usage:

    python scripts/card_metrics.py --only NAME ... [--aa-n 1000] [--attacks-only] [--eps 0.3] [--cards-only]

Fields already measured with the same test data, n, seed and code are kept (a rerun resumes where a killed one
stopped; the attacks' own state sits in <checkpoint>/.card_state). --attacks-only re-measures AutoAttack, PGD-10
and the masking gap and keeps every other field. --cards-only rewrites README.md from config.json + metrics.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ssm_lab.card_metrics import DEFAULT_N, card_metrics
from ssm_lab.cards import write_card
from ssm_models.atomic import atomic_write

ROOT = Path(__file__).resolve().parent.parent

STATE_DIR = ".card_state"


def checkpoints(root: Path, names: list[str] | None) -> list[Path]:
    found = sorted(p.parent for p in root.glob("*/config.json") if (p.parent / "model.safetensors").exists())
    if not names:
        return found
    missing = [n for n in names if not (root / n / "config.json").is_file()]
    if missing:
        raise SystemExit(f"no checkpoint named {', '.join(missing)} under {root}")
    return [root / n for n in names]


def measure(directory: Path, a) -> None:
    from ssm_models.hub import load_model

    model = load_model(directory)
    path = directory / "metrics.json"
    previous = json.loads(path.read_text()) if path.is_file() else None

    def save(metrics: dict) -> None:
        atomic_write(path, json.dumps(metrics, indent=1, allow_nan=False) + "\n")

    eps = tuple(a.eps) if a.eps else None
    metrics = card_metrics(model, model.config.meta["dataset"], n=a.aa_n, seed=a.seed, eps=eps, data_dir=a.data_dir,
                           previous=previous, attacks_only=a.attacks_only,
                           state_dir=directory / STATE_DIR, save=save,
                           log=lambda m: print(f"[{directory.name}] {m}", flush=True))
    write_card(directory, metrics)
    state = directory / STATE_DIR
    if state.is_dir() and not any(state.iterdir()):
        state.rmdir()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="checkpoint names (default: every checkpoint under --root)")
    p.add_argument("--root", type=Path, default=ROOT / "checkpoints")
    p.add_argument("--aa-n", type=int, default=DEFAULT_N, help="stratified test images for AutoAttack and PGD-10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps", type=float, nargs="*", help="measure only these eps (default: the card eps)")
    p.add_argument("--attacks-only", action="store_true", help="re-measure AutoAttack, PGD-10 and masking only")
    p.add_argument("--cards-only", action="store_true", help="rewrite README.md from config + metrics; measure none")
    p.add_argument("--data-dir")
    a = p.parse_args(argv)
    if a.aa_n < 1:
        p.error(f"--aa-n must be at least 1, got {a.aa_n}")
    for directory in checkpoints(a.root, a.only):
        started = time.time()
        if a.cards_only:
            if not (directory / "metrics.json").is_file():
                print(f"== {directory.name}: no metrics.json, card left as it is", flush=True)
                continue
            write_card(directory)
        else:
            measure(directory, a)
        print(f"== {directory.name}: card written in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
