"""Write docs/findings.md: the paper's claims checked against the shipped checkpoints (numbers from this run).

    python scripts/findings.py [--n-pgd 1000] [--n-analysis 256]

Uses metrics.json of each shipped checkpoint (card metrics) where present, measures best-vs-last PGD-10 gaps on the
test set, and runs the component error-scaling analysis; figures go to docs/figures/*.png.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from ssm_lab.analysis import error_scaling, summarize_by_component
from ssm_lab.attacks import make_attack
from ssm_lab.catalogue import at_eps, catalogue_entries
from ssm_lab.data import load_dataset, sample_indices
from ssm_lab.evaluate import accuracy_entry, predict
from ssm_lab.plots import component_bars_figure, training_curves_figure
from ssm_lab.train import DEFAULT_THREAT
from ssm_models.hub import load_model

ROOT = Path(__file__).resolve().parent.parent

CK = ROOT / "checkpoints"
DOCS = ROOT / "docs"
FIG = DOCS / "figures"
PURE = ("s4", "dss", "s5", "mamba")
COMPONENTS = ("ssm", "act", "ads", "attn", "gate", "linear", "residual_norm")


def pct(e: dict | None) -> str:
    if not e:
        return "n/a"
    return f"{e['accuracy']:.1%} [{e['ci95'][0]:.1%}, {e['ci95'][1]:.1%}]"


def pgd10(model, x, y, eps: float, seed: int = 0) -> dict:
    adv = make_attack("pgd", model, eps=eps, steps=10, step_size=eps / 4, seed=seed).run(x, y).adv
    return accuracy_entry(int((predict(model, adv) == y).sum()), len(y))


METHODS = ("st", "pgdat", "trades", "freeat", "yopo")


def measure(path: Path, x, y, eps: float) -> dict:
    """Clean and PGD-10 accuracy of the best and last weights, plus the card's AutoAttack entry."""
    chosen = load_model(path)  # the best-validation weights
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
    return {"clean": accuracy_entry(int((predict(chosen, x) == y).sum()), len(y)),
            "best": pgd10(chosen, x, y, eps),
            "last": pgd10(load_model(path / "last"), x, y, eps) if (path / "last").exists() else None,
            "aa": at_eps(metrics.get("autoattack", {}), eps),
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


def shipped_cards() -> list[tuple[str, dict, dict, float]]:
    """(name, metrics.json, config meta, the dataset's threat-model eps) of every shipped checkpoint with card
    metrics, by name, read once for the tables below."""
    return [(e["name"], e["metrics"], e["meta"], e["threat_eps"])
            for e in sorted(catalogue_entries(CK), key=lambda e: e["name"]) if e["metrics"]]


def card_table(cards) -> list[str]:
    """Every shipped checkpoint's card metrics (from its metrics.json) and training wall time."""
    lines = ["## Shipped checkpoints", "",
             "Card metrics: clean accuracy on the full official test set; PGD-10 on 1,000 and AutoAttack standard on "
             "200 stratified test images (seed 0), Linf, at the dataset's threat model (MNIST 0.3, CIFAR-10 8/255).",
             "", "| checkpoint | clean | PGD-10 | AutoAttack | epochs (best) | training wall time |",
             "|---|---|---|---|---|---|"]
    for name, metrics, meta, eps in cards:
        wall = meta.get("train_wall_time_s")
        lines.append(f"| {name} | {pct(metrics['clean'])} | {pct(at_eps(metrics['pgd10'], eps))} | "
                     f"{pct(at_eps(metrics['autoattack'], eps))} | "
                     f"{meta.get('epochs_trained')} ({meta.get('best_epoch')}) | "
                     f"{'n/a' if wall is None else f'{wall / 60:.1f} min'} |")
    return lines + [""]


SQUARE_FLAG = re.compile(r"Square Attack has decreased the robust accuracy of ([0-9.]+)%")


def masking_table(cards) -> list[str]:
    """AutoAttack's own reliability check, read from the cards: what Square (no gradients) still found after the
    three gradient attacks. A large share means the gradient attacks were misled, so PGD overstates robustness."""
    rows = []
    for name, metrics, _, eps in cards:
        aa = at_eps(metrics.get("autoattack", {}), eps)
        drops = [float(m.group(1)) for flag in (aa or {}).get("flags", []) if (m := SQUARE_FLAG.search(flag))]
        if drops:
            rows.append((max(drops), name, pct(at_eps(metrics["pgd10"], eps)), pct(aa)))
    if not rows:
        return []
    rows.sort(reverse=True)
    lines = ["## Are the gradient attacks misled? AutoAttack's own check", "",
             "AutoAttack runs APGD-CE, APGD-T and FAB-T (gradient attacks), then Square, which uses no gradients, on "
             "the images still standing, and flags the run when Square still lowers robust accuracy (`flags` in "
             "each card's metrics.json). The figure is that drop as AutoAttack reports it: in points of the images it "
             "was handed, i.e. those of the 200 the model classifies correctly (the cards run one batch of 200). "
             "A point or two is what a different attack finds anyway; tens of points mean the "
             "gradients mislead the gradient attacks (gradient masking), so PGD-10 overstates that model's "
             "robustness and AutoAttack is the figure to quote. Same 200 images as the AutoAttack column.", "",
             "| checkpoint | PGD-10 (1,000 images) | AutoAttack (200) | robust accuracy Square took after the "
             "gradient attacks |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {pgd} | {aa} | {drop:.1f} points |" for drop, name, pgd, aa in rows]
    worst = rows[0]
    lines += ["", f"Largest: {worst[1]} ({worst[0]:.1f} points). Checkpoints not listed raised no flag at their "
              "threat model.", ""]
    return lines


def best(entry: dict | None) -> float | None:
    return entry["best"]["accuracy"] if entry else None


def overfit_gap(entry: dict) -> float:
    return entry["best"]["accuracy"] - (entry["last"] or entry["best"])["accuracy"]


def ads_line(base: str, method: str, plain: dict, ads: dict) -> str:
    """AdS against the same architecture and training method without it."""
    return (f"- **AdS on {base}** under {method}: PGD-10 {pct(ads['best'])} vs {pct(plain['best'])} without AdS "
            f"({best(ads) - best(plain):+.1%}); AutoAttack (card) {pct(ads['aa'])} vs {pct(plain['aa'])}; clean "
            f"{pct(ads['clean'])} vs {pct(plain['clean'])}; best - last gap {overfit_gap(ads):+.1%} (without AdS "
            f"{overfit_gap(plain):+.1%}).")


def claims(results: dict) -> list[str]:
    """The paper's MNIST claims, answered from this run's numbers, whichever way they fall."""
    lines = ["### What the numbers say", ""]
    gains = {}
    for arch in PURE + ("mega",):
        st, at = results.get(arch, {}).get("st"), results.get(arch, {}).get("pgdat")
        if st and at:
            gains[arch] = best(at) - best(st)
            lines.append(f"- {arch}: PGD-AT raises PGD-10 accuracy from {pct(st['best'])} to {pct(at['best'])} "
                         f"({gains[arch]:+.1%}; AutoAttack {pct(at['aa'])}); clean {pct(st['clean'])} -> "
                         f"{pct(at['clean'])}; best - last {overfit_gap(at):+.1%}.")
        else:
            lines.append(f"- {arch}: n/a (a checkpoint is missing).")
    for method in METHODS[2:]:
        other = results.get("s4", {}).get(method)
        if other:
            lines.append(f"- s4 with {method}: PGD-10 {pct(other['best'])}, clean {pct(other['clean'])} (PGD-AT: "
                         f"{pct(results['s4']['pgdat']['best']) if 'pgdat' in results.get('s4', {}) else 'n/a'}).")
    pure = {a: g for a, g in gains.items() if a in PURE}
    if pure and "mega" in gains:
        more = gains["mega"] > max(pure.values())
        lines.append(f"- **Do pure SSMs gain little, and Mega more?** Largest pure-SSM gain {max(pure.values()):+.1%} "
                     f"({max(pure, key=pure.get)}), Mega {gains['mega']:+.1%}: Mega gains "
                     f"{'more' if more else 'no more'} than every pure SSM here. Mega's best - last gap is "
                     f"{overfit_gap(results['mega']['pgdat']):+.1%} (the paper reports robust overfitting for it).")
    for base, method in (("s4", "pgdat"), ("dss", "pgdat"), ("s4", "freeat")):
        plain, ads = results.get(base, {}).get(method), results.get(f"{base}-ads", {}).get(method)
        if plain and ads:
            lines.append(ads_line(base, method, plain, ads))
    return lines + [""]


def cifar_claims(results: dict) -> list[str]:
    s4 = results.get("s4", {})
    ads = results.get("s4-ads", {}).get("freeat")
    if not (s4.get("st") and s4.get("freeat")):
        return []
    lines = ["### What the CIFAR-10 numbers say", "",
             f"- s4: FreeAT raises PGD-10 accuracy from {pct(s4['st']['best'])} to {pct(s4['freeat']['best'])}, "
             f"clean {pct(s4['st']['clean'])} -> {pct(s4['freeat']['clean'])}."]
    if ads:
        lines.append(ads_line("s4", "freeat", s4["freeat"], ads))
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-pgd", type=int, default=1000)
    p.add_argument("--n-analysis", type=int, default=256)
    a = p.parse_args()
    torch.set_num_threads(1)
    FIG.mkdir(parents=True, exist_ok=True)
    for stale in FIG.glob("curves-*.png"):  # one per shipped checkpoint, written below
        stale.unlink()
    test = load_dataset("mnist", "test")
    train = load_dataset("mnist", "train")
    eps = DEFAULT_THREAT["mnist"][0]

    def ck(name):
        path = CK / name
        return path if (path / "model.safetensors").exists() else None

    lines = ["# The paper's findings, checked with our checkpoints", "",
             "Generated by `python scripts/findings.py` from the shipped checkpoints (`checkpoints/`). "
             f"Robust accuracy: PGD-10 (step eps/4, random start) at Linf eps = {eps} on {a.n_pgd} test images "
             f"(stratified, seed 0) from {test.source}; brackets are 95% Wilson intervals. Card metrics "
             "(AutoAttack) come from each checkpoint's metrics.json where measured.", ""]

    cards = shipped_cards()
    lines += card_table(cards)
    lines += masking_table(cards)

    # 1 + 2 + 3: ST vs AT (and the other methods), best vs last
    results = {}
    for dataset, archs in (("mnist", ("s4", "dss", "s5", "mamba", "mega", "s4-ads", "dss-ads")),
                           ("cifar10", ("s4", "mamba", "s4-ads"))):
        eps_d = DEFAULT_THREAT[dataset][0]
        test_d = test if dataset == "mnist" else load_dataset(dataset, "test")
        xd, yd = test_d.tensors(sample_indices(test_d, a.n_pgd, 0))
        lines += (["## Robustness from adversarial training, best vs last", ""] if dataset == "mnist" else
                  ["## CIFAR-10 at eps = 8/255", "", f"PGD-10 on {len(yd)} test images (stratified, seed 0) from "
                   f"{test_d.source}; otherwise as above.", ""])
        rows, results[dataset] = [], {}
        for arch in archs:
            entry = {}
            for method in METHODS:
                path = ck(f"{dataset}-{arch}-{method}")
                if path is None:
                    continue
                entry[method] = e = measure(path, xd, yd, eps_d)
                gap = (e["best"]["accuracy"] - e["last"]["accuracy"]) if e["last"] else None
                rows.append(f"| {arch} | {method} | {pct(e['clean'])} | {pct(e['best'])} | {pct(e['last'])} | "
                            f"{'n/a' if gap is None else f'{gap:+.1%}'} | {pct(e['aa'])} | "
                            f"{e['best_epoch']}/{e['epochs']} |")
                if (path / "curves.json").exists():
                    curves = json.loads((path / "curves.json").read_text())
                    save_png(training_curves_figure(curves, f"{dataset} {arch} {method}"),
                             FIG / f"curves-{path.name}.png", width=900, height=360)
            results[dataset][arch] = entry
        lines += ["| model | training | clean | PGD-10 (best) | PGD-10 (last) | best - last | AutoAttack (card) | "
                  "best epoch / epochs |", "|---|---|---|---|---|---|---|---|", *rows, ""]
        if dataset == "mnist":
            lines += claims(results["mnist"])
    lines += cifar_claims(results["cifar10"])

    # 4: error scaling
    analyses = {}
    xs_tr, ys_tr = train.tensors(sample_indices(train, a.n_analysis, 0))
    xs_te, ys_te = test.tensors(sample_indices(test, a.n_analysis, 0))
    for name in ("mnist-s4-pgdat", "mnist-s4-ads-pgdat", "mnist-mamba-pgdat", "mnist-mamba-st", "mnist-mega-pgdat"):
        path = ck(name)
        if path is None:
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
    lines += ["## Training curves", ""] + [f"![{f.stem}](figures/{f.name})" for f in sorted(FIG.glob("curves-*.png"))]
    (DOCS / "findings.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {DOCS / 'findings.md'}")


if __name__ == "__main__":
    main()
