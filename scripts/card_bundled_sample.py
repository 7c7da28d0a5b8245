"""Add each shipped card's clean accuracy on the bundled test sample (`clean_bundled_sample` + a card line).

Usage: python scripts/card_bundled_sample.py [CHECKPOINTS_DIR]   (default: checkpoints/ of this project)
Only that field and its card line change; the weights are not touched.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ssm_lab.card_metrics import clean_bundled_sample
from ssm_lab.cards import write_card
from ssm_models.hub import list_checkpoints, load_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "checkpoints"
    for entry in list_checkpoints(root):
        if not entry["metrics"] or entry["name"].endswith("/last"):
            continue
        path, started = Path(entry["path"]), time.time()
        metrics = json.loads((path / "metrics.json").read_text())
        metrics["clean_bundled_sample"] = clean_bundled_sample(load_model(path), metrics["dataset"])
        write_card(path, metrics)
        figure = metrics["clean_bundled_sample"]
        print(f"{entry['name']}: {figure['accuracy']:.1%} (n={figure['n']}) vs full test set "
              f"{metrics['clean']['accuracy']:.1%} (n={metrics['clean']['n']}), {time.time() - started:.1f} s",
              flush=True)


if __name__ == "__main__":
    main()
