"""Card metrics for a checkpoint: clean accuracy on the full test set, PGD-10 and AutoAttack on fixed samples."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ssm_models.atomic import atomic_write
from ssm_models.hub import load_model, save_pretrained

from .data import bundled_sample, dataset_info, load_dataset, sample_indices
from .evaluate import accuracy_entry, eps_label, evaluate, predict



def card_metrics(model, dataset: str, *, n_pgd: int = 1000, n_aa: int = 200, seed: int = 0, data_dir=None,
                 log=print) -> dict:
    test = load_dataset(dataset, "test", data_dir=data_dir)
    x_all, y_all = test.tensors()
    t0 = time.time()
    clean = accuracy_entry(int((predict(model, x_all) == y_all).sum()), len(y_all))
    log(f"clean {clean['accuracy']:.4f} on {len(y_all)}")
    metrics = {"dataset": dataset, "test_source": test.source, "test_warning": test.warning, "clean": clean,
               "clean_sample": clean_sample(model, test), "pgd10": {}, "autoattack": {}, "seed": seed}
    info = dataset_info(dataset)
    pgd_idx = sample_indices(test, min(n_pgd, len(y_all)), seed)
    aa_idx = sample_indices(test, min(n_aa, len(y_all)), seed)
    for eps in info.card_eps:
        x, y = test.tensors(pgd_idx)
        step = info.card_pgd_step(eps)
        rep = evaluate(model, x, y, [{"name": "pgd", "steps": 10, "step_size": step}], eps=eps)
        metrics["pgd10"][eps_label(eps)] = {**_entry(rep["attacks"][0]), "eps": eps, "step_size": step,
                                            "clean_on_sample": rep["clean"]}
        log(f"pgd10 eps {eps_label(eps)}: {rep['attacks'][0]['accuracy']:.4f} (n={len(y)})")
        x, y = test.tensors(aa_idx)
        rep = evaluate(model, x, y, [{"name": "autoattack", "version": "standard"}], eps=eps, batch_size=200)
        metrics["autoattack"][eps_label(eps)] = {**_entry(rep["attacks"][0]), "eps": eps, "version": "standard",
                                                 "flags": rep["attacks"][0]["flags"]}
        log(f"autoattack eps {eps_label(eps)}: {rep['attacks'][0]['accuracy']:.4f} (n={len(y)})")
    metrics["seconds"] = round(time.time() - t0, 1)
    metrics["clean_bundled_sample"] = clean_bundled_sample(model, dataset)
    return metrics


SAMPLE_N, SAMPLE_SEED = 200, 0


def clean_sample(model, test) -> dict:
    """Clean accuracy on the fixed 200-image sample the test suite re-checks every shipped checkpoint on."""
    x, y = test.tensors(sample_indices(test, SAMPLE_N, SAMPLE_SEED))
    return {**accuracy_entry(int((predict(model, x) == y).sum()), len(y)), "seed": SAMPLE_SEED}


def clean_bundled_sample(model, dataset: str) -> dict:
    """Clean accuracy on the 1,000-image sample shipped in the package: a figure any machine can re-check."""
    x, y = bundled_sample(dataset).tensors()
    return accuracy_entry(int((predict(model, x) == y).sum()), len(y))


def _entry(e: dict) -> dict:
    return {k: e[k] for k in ("accuracy", "correct", "n", "ci95")}


def _pct(e: dict) -> str:
    return f"{e['accuracy']:.2%} [{e['ci95'][0]:.1%}, {e['ci95'][1]:.1%}] (n={e['n']})"


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


def card_description(meta: dict, metrics: dict) -> str:
    """Human summary at the top of the model card: results with n and intervals, then how it was trained."""
    rows = [f"| clean, full test set | {_pct(metrics['clean'])} |"]
    if metrics.get("clean_bundled_sample"):
        rows.append(f"| clean, bundled test sample (ships with the package) | "
                    f"{_pct(metrics['clean_bundled_sample'])} |")
    for label, e in metrics["pgd10"].items():
        rows.append(f"| PGD-10 Linf eps={label} (step {e['step_size']:.4g}) | {_pct(e)} |")
    for label, e in metrics["autoattack"].items():
        flags = f"; flags: {', '.join(e['flags'])}" if e.get("flags") else ""
        rows.append(f"| AutoAttack standard Linf eps={label}{flags} | {_pct(e)} |")
    tc = meta.get("train_config", {})
    tm = meta.get("threat_model", {})
    training = [
        f"- method: `{meta.get('method')}`; {meta.get('epochs_trained')} epochs, best epoch "
        f"{meta.get('best_epoch')} (highest {'clean' if meta.get('method') == 'st' else 'PGD-10'} accuracy on "
        "the validation split, never the test set)",
        f"- wall time: {meta.get('train_wall_time_s')} s on a 2-core CPU (single thread), this project's "
        "`ssm-lab train`",
        f"- AdamW lr {tc.get('lr')}, weight decay {tc.get('weight_decay')}, cosine schedule, "
        f"batch {tc.get('batch_size')},"
        f" augmentation: {'random shifts' if tc.get('augment') else 'none'}, seed {tc.get('seed')}",
    ]
    if isinstance(meta.get("train_data"), dict):
        training.append(f"- training data: {meta['train_data'].get('source')}")
    if tc.get("train_limit"):
        training.append(f"- trained on a stratified seeded sample of {tc['train_limit']:,} training images (a CPU "
                        "budget), not the whole training split")
    if meta.get("method") != "st":
        training.append(f"- training attack: {training_attack(meta.get('method'), tc, tm)}")
        if tc.get("eps_warmup_epochs"):
            training.append(f"- eps (and step) ramped linearly from 0 over the first {tc['eps_warmup_epochs']:g} "
                            "epochs")
    return "\n".join([
        "## Results", "", f"Test data: {metrics['test_source']}. 95% Wilson intervals; PGD and AutoAttack on fixed "
        f"stratified samples (seed {metrics['seed']}).", "", "| evaluation | accuracy |", "|---|---|", *rows, "",
        "## Training", "", *training])


def write_card(directory: str | Path, metrics: dict) -> None:
    """Store metrics.json and regenerate the model card from config + metrics (weights rewritten bit-identically)."""
    directory = Path(directory)
    model = load_model(directory)
    meta = model.config.meta
    atomic_write(directory / "metrics.json", json.dumps(metrics, indent=1))
    save_pretrained(model, directory, card={
        "dataset": meta.get("dataset"), "method": meta.get("method"), "threat_model": meta.get("threat_model"),
        "metrics": metrics, "description": card_description(meta, metrics)})
