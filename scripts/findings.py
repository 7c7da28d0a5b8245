"""Write docs/findings.md: the paper's claims checked against the shipped checkpoints (numbers from this run).

    python scripts/findings.py [--n-pgd 1000] [--n-analysis 256] [--spread mnist-s4-pgdat] [--skip-analysis]

Leads with the cards' AutoAttack figures laid out as the paper's Table 1 and Table 2; every comparison sentence is
computed from the 95% intervals (a difference is stated only when they separate). Measures PGD-10's spread over
seeds and batchings on one checkpoint, best-vs-last PGD-10 gaps, and the component error-scaling analysis; figures
go to docs/figures/*.png.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from ssm_lab.analysis import error_scaling, summarize_by_component
from ssm_lab.attacks import make_attack
from ssm_lab.cards import trained_with_earlier_code
from ssm_lab.catalogue import catalogue_entries
from ssm_lab.data import load_dataset, sample_indices
from ssm_lab.datasets.info import DATASETS
from ssm_lab.evaluate import accuracy_entry, predict
from ssm_lab.findings_tables import (
    NO_DIFFERENCE,
    ads_comparisons,
    comparison,
    family_comparisons,
    masking_rows,
    pct,
    table1,
    table2,
    training_comparisons,
)
from ssm_lab.plots import component_bars_figure, training_curves_figure
from ssm_models.atomic import atomic_write
from ssm_models.hub import load_model

ROOT = Path(__file__).resolve().parent.parent

CK = ROOT / "checkpoints"
DOCS = ROOT / "docs"
FIG = DOCS / "figures"
PURE = ("s4", "dss", "s5", "mamba")
COMPONENTS = ("ssm", "act", "ads", "attn", "gate", "linear", "residual_norm")


def pgd10(model, x, y, eps: float, seed: int = 0, batch_size: int = 128) -> dict:
    attack = make_attack("pgd", model, eps=eps, steps=10, step_size=eps / 4, seed=seed, batch_size=batch_size)
    adv = attack.run(x, y).adv
    return accuracy_entry(int((predict(model, adv) == y).sum()), len(y))


def measure(path: Path, x, y, eps: float) -> dict:
    """Clean and PGD-10 accuracy of the best and last weights."""
    chosen = load_model(path)  # the best-validation weights
    return {"clean": accuracy_entry(int((predict(chosen, x) == y).sum()), len(y)),
            "best": pgd10(chosen, x, y, eps),
            "last": pgd10(load_model(path / "last"), x, y, eps) if (path / "last").exists() else None,
            "best_epoch": chosen.config.meta.get("best_epoch"), "epochs": chosen.config.meta.get("epochs_trained")}


def save_png(figure, path: Path, **size) -> None:
    """plotly's PNG export through kaleido, which starts a headless browser per call; on a busy machine that page
    sometimes is not ready in time (`kaleido_scopes is not defined`), so try again a couple of times."""
    for attempt in range(3):
        try:
            figure.write_image(path, **size)
            return
        except Exception:  # noqa: BLE001 - kaleido raises its own JavaScript error types
            if attempt == 2:
                raise


SPREAD_BATCHES = (100, 128, 200, 250, 500)  # PGD's random start depends on the batch an image is attacked in


def pgd_spread(path: Path, x, y, eps: float, runs: int) -> list[str]:
    """PGD-10 on the same checkpoint and images with different seeds and batchings: its run-to-run spread."""
    model = load_model(path)
    results = [(seed, batch, pgd10(model, x, y, eps, seed=seed, batch_size=batch)["accuracy"])
               for seed, batch in zip(range(runs), SPREAD_BATCHES * runs)]
    values = [r[2] for r in results]
    half = max(accuracy_entry(round(v * len(y)), len(y))["ci95"][1] - v for v in values)
    return ["## PGD-10's run-to-run spread", "",
            f"PGD-10 (step eps/4, random start) at eps {eps} on {path.name}, the same {len(y):,} stratified test "
            f"images, {runs} runs with different seeds and batch sizes: "
            + ", ".join(f"{100 * v:.1f}% (seed {s}, batch {b})" for s, b, v in results)
            + f". Range {100 * (max(values) - min(values)):.1f} points, standard deviation "
            f"{100 * statistics.pstdev(values):.1f} points; a Wilson half-width at this n is about {100 * half:.1f} "
            "points. Differences of this size between two PGD-10 figures say nothing about the models.", ""]


def say(found: list[dict]) -> list[str]:
    """Comparison sentences as a list, each computed from its intervals."""
    return [f"- {c['text']}" for c in found] or ["- (no pair of trained checkpoints to compare yet)"]


def earlier_code_notes(cards: list[dict]) -> list[str]:
    """A warning under the table for every cell whose checkpoint was trained by the earlier YOPO/FreeAT code."""
    names = [e["name"] for e in cards if trained_with_earlier_code(e["meta"])]
    if not names:
        return []
    return [f"Trained with this project's earlier YOPO/FreeAT code, before this release fixed it (see each card): "
            f"{', '.join(f'`{n}`' for n in names)}. Their cells are not measurements of the current algorithms.",
            ""]


def budget_notes(cards: list[dict]) -> list[str]:
    """Which FreeAT cells ran at PGD-AT's budget of optimiser steps, so the FreeAT column compares like with like."""
    names = [e["name"] for e in cards if e["meta"].get("method") == "freeat"
             and (e["meta"].get("train_config") or {}).get("freeat_equal_budget")]
    if not names:
        return []
    return [f"FreeAT at PGD-AT's number of optimiser steps (its epochs and eps ramp divided by the m replays, as "
            f"Shafahi et al. compare; each card gives the budget): {', '.join(f'`{n}`' for n in names)}.", ""]


def learning_rate_notes(cards: list[dict]) -> list[str]:
    """Cells trained at another learning rate than the rest of their column (same data set and method)."""
    columns: dict[tuple, list[tuple[str, float]]] = {}
    for e in cards:
        lr = (e["meta"].get("train_config") or {}).get("lr")
        if lr is not None:
            columns.setdefault((e["dataset"], e["meta"].get("method")), []).append((e["name"], lr))
    lines = []
    for (dataset, method), cells in sorted(columns.items(), key=lambda item: str(item[0])):
        rates = [lr for _, lr in cells]
        usual = max(set(rates), key=rates.count)
        odd = [f"`{name}` (lr {lr:g})" for name, lr in cells if lr != usual]
        if odd:
            lines.append(f"Trained at another learning rate than the rest of the {dataset} {method} column "
                         f"(lr {usual:g}): {', '.join(odd)}; `scripts/train_checkpoints.py` says why.")
    return [*lines, ""] if lines else []


def collapse_notes(cards: list[dict]) -> list[str]:
    """Runs whose training fell to chance and stayed there (validation clean accuracy at most 1.5 / classes), with
    the epoch the shipped weights come from."""
    lines = []
    for e in cards:
        path = Path(e["path"]) / "curves.json"
        if not path.exists():
            continue
        history = json.loads(path.read_text()).get("history") or []
        chance = 1.5 / len(DATASETS[e["dataset"]].classes)
        clean = [row.get("val_clean_acc") for row in history]
        if not clean or clean[-1] is None or clean[-1] > chance:
            continue
        start = len(clean)
        while start > 0 and clean[start - 1] is not None and clean[start - 1] <= chance:
            start -= 1
        lines.append(f"`{e['name']}`: training fell to chance at epoch {start + 1} of {len(clean)} and stayed "
                     f"there (validation clean accuracy {clean[-1]:.1%} at the end); its weights are the best "
                     f"epoch on validation PGD-10, epoch {e['meta'].get('best_epoch')}, and its curves show the "
                     "collapse.")
    return [*lines, ""] if lines else []


def card_sections(cards: list[dict]) -> list[str]:
    """Table 1, Table 2 and the comparisons, all from the cards' AutoAttack figures at the threat model."""
    mnist = [e for e in cards if e["dataset"] == "mnist"]
    cifar = [e for e in cards if e["dataset"] == "cifar10"]
    lines = ["## Table 1: MNIST, family x training method", "",
             "Each cell: clean accuracy on the full test set / **AutoAttack standard** at Linf eps "
             f"{DATASETS['mnist'].eps_label} on the card's "
             "stratified test images, with 95% Wilson intervals and n; checkpoints without AdS. Card metrics from "
             "each checkpoint's metrics.json.", "", *table1(mnist), "", *budget_notes(cards),
             *learning_rate_notes(mnist), *collapse_notes(mnist), *earlier_code_notes(cards),
             "## Table 2: MNIST, AdS variants under PGD-AT", "", "Same cells as Table 1.", "", *table2(mnist), "",
             "### What the AutoAttack numbers say", "",
             "A difference is stated only when the two 95% intervals do not overlap; otherwise the sentence says "
             "so. Adversarial training against standard training, and each training method against PGD-AT:", "",
             *say(training_comparisons(mnist)), "",
             "The paper: pure SSMs gain little from adversarial training and Mega (attention) gains more. Mega "
             "against each pure SSM under PGD-AT:", "", *say(family_comparisons(mnist)), "",
             "The paper: AdS brings S4 and DSS close to Mega. Each AdS variant against the same model without it:",
             "", *say(ads_comparisons(mnist)), *say(ads_comparisons(mnist, what="clean")), ""]
    if cifar:
        lines += [f"## CIFAR-10 at eps = {DATASETS['cifar10'].eps_label}", "", *table1(cifar, "cifar10"), "",
                  *say(training_comparisons(cifar, "cifar10") + ads_comparisons(cifar, "cifar10")), ""]
    lines += ["## Gradient masking: how far PGD-10 overstates AutoAttack", "",
              "The diagnostic is the PGD-10 minus AutoAttack gap on the same images with Newcombe's paired 95% "
              "interval: an interval above zero means PGD-10's gradients were misled and its figure overstates the "
              "model. Square's extra drop (points Square, which uses no gradients, took after the gradient attacks) "
              "is shown beside it; it is not a test on its own: a model can mislead PGD-10 by tens of points and "
              "still leave Square nothing, because APGD already did the work.", "", *masking_rows(cards), ""]
    return lines


def best_vs_last(cards: list[dict], n: int) -> list[str]:
    """PGD-10 of the selected (best-validation) weights against the last epoch's, same images, per checkpoint."""
    lines = ["## Best vs last epoch (robust overfitting), PGD-10", "",
             f"PGD-10 (step eps/4, random start) at each dataset's threat model on {n:,} stratified test images (seed "
             "0) for the selected weights (best validation epoch) and the last epoch's. The verdict is computed from "
             "the two 95% intervals.", "",
             "| checkpoint | best epoch / epochs | PGD-10 (best) | PGD-10 (last) | verdict |", "|---|---|---|---|---|"]
    data = {}
    for e in cards:
        path = Path(e["path"])
        if not (path / "last" / "model.safetensors").exists():
            continue
        if e["dataset"] not in data:
            test = load_dataset(e["dataset"], "test")
            data[e["dataset"]] = test.tensors(sample_indices(test, n, 0))
        x, y = data[e["dataset"]]
        r = measure(path, x, y, e["threat_eps"])
        c = comparison("best", r["best"], "last", r["last"], "PGD-10")
        verdict = (NO_DIFFERENCE if not c["claims_difference"] else
                   f"best {'higher' if r['best']['accuracy'] > r['last']['accuracy'] else 'lower'} than last")
        lines.append(f"| {e['name']} | {r['best_epoch']}/{r['epochs']} | {pct(r['best'])} | {pct(r['last'])} | "
                     f"{verdict} |")
        if (path / "curves.json").exists():
            curves = json.loads((path / "curves.json").read_text())
            save_png(training_curves_figure(curves, e["name"]), FIG / f"curves-{path.name}.png", width=900,
                     height=360)
    return lines + [""]


SKIPPED = "Not measured in this run (`{}`): `python scripts/findings.py` without it measures this section."


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-pgd", type=int, default=1000)
    p.add_argument("--n-analysis", type=int, default=256)
    p.add_argument("--spread", default="mnist-s4-pgdat", help="checkpoint whose PGD-10 spread over seeds is measured")
    p.add_argument("--spread-runs", type=int, default=5)
    p.add_argument("--skip-analysis", action="store_true", help="no error-scaling section (the costly part)")
    p.add_argument("--skip-best-last", action="store_true",
                   help="no best-vs-last PGD-10 section and no new curve figures (two PGD-10 runs per checkpoint)")
    a = p.parse_args()
    torch.set_num_threads(1)
    FIG.mkdir(parents=True, exist_ok=True)
    if not a.skip_best_last:
        for stale in FIG.glob("curves-*.png"):  # one per shipped checkpoint, written below
            stale.unlink()
    test = load_dataset("mnist", "test")
    train = load_dataset("mnist", "train")
    eps = DATASETS["mnist"].eps

    def ck(name):
        path = CK / name
        return path if (path / "model.safetensors").exists() else None

    cards = [e for e in catalogue_entries(CK) if e["metrics"]]
    lines = ["# The paper's findings, checked with our checkpoints", "",
             "Generated by `python scripts/findings.py` from the shipped checkpoints (`checkpoints/`). The headline "
             "figure is AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) from each card; PGD-10 is weaker and "
             f"kept as a secondary column. Test data: {test.source}. Brackets are 95% Wilson intervals with n.", ""]
    lines += card_sections(cards)
    if ck(a.spread):
        x, y = test.tensors(sample_indices(test, a.n_pgd, 0))
        lines += pgd_spread(ck(a.spread), x, y, eps, a.spread_runs)
    lines += (best_vs_last(cards, a.n_pgd) if not a.skip_best_last else
              ["## Best vs last epoch (robust overfitting), PGD-10", "", SKIPPED.format("--skip-best-last"), ""])

    # error scaling
    analyses = {}
    xs_tr, ys_tr = train.tensors(sample_indices(train, a.n_analysis, 0))
    xs_te, ys_te = test.tensors(sample_indices(test, a.n_analysis, 0))
    for name in ("mnist-s4-pgdat", "mnist-s4-ads-pgdat", "mnist-mamba-pgdat", "mnist-mamba-st", "mnist-mega-pgdat"):
        path = ck(name)
        if path is None or a.skip_analysis:
            continue
        model = load_model(path)
        for split, (xs, ys) in (("train", (xs_tr, ys_tr)), ("test", (xs_te, ys_te))):
            adv = make_attack("pgd", model, eps=eps, steps=10, step_size=eps / 4, seed=0).run(xs, ys).adv
            analyses[f"{name.removeprefix('mnist-')} ({split})"] = error_scaling(model, xs, adv)
    if analyses:
        for metric in ("mse", "kl", "rel"):
            save_png(component_bars_figure(analyses, metric), FIG / f"error-scaling-{metric}.png",
                     width=1000, height=420)
        lines += ["## Component error scaling", "",
                  f"Change rate (after - before) / before of the clean-vs-adversarial error for each component, "
                  f"mean over layers, PGD-10 at eps {eps} on {a.n_analysis} training and {a.n_analysis} test "
                  "images (definitions in README.md). Negative: the component shrinks the error.", "",
                  "![MSE change rates](figures/error-scaling-mse.png)", "",
                  "![KL change rates](figures/error-scaling-kl.png)", "",
                  "![Relative error change rates](figures/error-scaling-rel.png)", "",
                  "MSE scales with the size of the features, so a component that multiplies its output (AdS, a "
                  "linear layer) shows a large MSE change rate even when it leaves the error's share of the "
                  "signal alone; the relative error (squared error over the clean features' squared norm) "
                  "removes that scale. Each cell: MSE change rate / relative-error change rate.", "",
                  "| model (split) | " + " | ".join(COMPONENTS) + " |", "|---|" + "---|" * len(COMPONENTS)]
        for label, analysis in analyses.items():
            mse = summarize_by_component(analysis["components"], "mse")
            rel = summarize_by_component(analysis["components"], "rel")
            lines.append(f"| {label} | " + " | ".join(f"{mse[c]:+.2f} / {rel[c]:+.2f}" if c in mse else ""
                                                      for c in COMPONENTS) + " |")
        lines.append("")
    elif a.skip_analysis:
        lines += ["## Component error scaling", "", SKIPPED.format("--skip-analysis"), ""]
    lines += ["## Training curves", ""] + [f"![{f.stem}](figures/{f.name})" for f in sorted(FIG.glob("curves-*.png"))]
    atomic_write(DOCS / "findings.md", "\n".join(lines) + "\n")
    print(f"wrote {DOCS / 'findings.md'}")


if __name__ == "__main__":
    main()
