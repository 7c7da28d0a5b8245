"""Photographed digits through the app's upload path: `python -m benchmarks.photo_digits [--n N] [--seed S]` prints
each standard MNIST checkpoint's accuracy with digit framing, with the image used as it is, and on the digits
themselves (the ceiling)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
STANDARD = ("mnist-s4-st", "mnist-dss-st", "mnist-s5-st", "mnist-mega-st", "mnist-mamba-st")


def upload_batch(model, paths: list[str], fit: str) -> torch.Tensor:
    """(N, 1, 28, 28): each file through the app's own upload path, as the preview and the attack see it."""
    from app.handlers import model_x
    from app.request_types import ImageChoice

    return torch.cat([model_x(model, ImageChoice(source="upload", upload=path, fit=fit))[0] for path in paths])


@torch.no_grad()
def accuracy(model, x: torch.Tensor, labels: np.ndarray, batch: int = 100) -> float:
    predictions = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((predictions.numpy() == labels).mean())


def run(n: int, seed: int = 0) -> dict:
    """{checkpoint: {"framed": acc, "as it is": acc, "digits themselves": acc}} on n photographed test digits."""
    from ssm_models.hub import load_model
    from testkit.photo_digits import make_corpus, mnist_test_digits, write_corpus

    corpus = make_corpus(n, seed=seed)
    labels = np.array([item.label for item in corpus])
    digits = mnist_test_digits()[0][[item.source_index for item in corpus]]  # (n, 28, 28)
    raw = torch.from_numpy(digits[:, None].astype(np.float32) / 255)
    models = {name: load_model(CHECKPOINTS / name).eval() for name in STANDARD}
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(p) for p in write_corpus(corpus, Path(folder))]
        # the five models take the same 1x28x28 MNIST input, so each fit runs once through the upload path
        first = next(iter(models.values()))
        framed, as_is = upload_batch(first, paths, "auto"), upload_batch(first, paths, "squash")
    return {name: {"framed": accuracy(m, framed, labels), "as it is": accuracy(m, as_is, labels),
                   "digits themselves": accuracy(m, raw, labels)} for name, m in models.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="photographed digits (1 to 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.time()
    report = run(args.n, args.seed)
    print(f"{args.n} photographed MNIST test digits (seed {args.seed}), {time.time() - t0:.0f} s")
    for name, row in report.items():
        print(f"  {name:16s} " + ", ".join(f"{k} {v:.1%}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
