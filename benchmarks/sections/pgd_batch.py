"""Section 5: PGD-10 over batches of MNIST test images, ours vs torchattacks.PGD and vs bare gradient passes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ssm_lab.attacks import make_attack
from ssm_lab.datasets.info import DATASETS

from ..harness import measure_interleaved
from ..results import Row, Target, memory_text
from .common import ROBUST_S4, SHIPPED_S4, Settings, Stopwatch, mnist_batch, new_section, shipped_s4

KEY = "pgd-batch"
TITLE = "PGD-10 over batches of MNIST images: ours vs torchattacks and vs bare forward+backward passes"
EPS, ALPHA, STEPS = DATASETS["mnist"].eps, DATASETS["mnist"].pgd_step, 10  # the shipped checkpoint's threat model
BARE_PASSES = STEPS + 1  # the steps plus one pass for the final evaluation


def _batches(x: torch.Tensor, y: torch.Tensor, size: int):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def _torchattacks_pgd(model, batches, frozen: bool):
    import torchattacks

    def attack_all():
        attack = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        for xb, yb in batches:
            attack(xb, yb)

    if not frozen:
        def plain():
            model.eval()  # what a user does: parameters still require gradients
            attack_all()
        return plain

    def in_frozen():
        with model.frozen():  # the state our engine attacks in: kernels cached
            attack_all()
    return in_frozen


def _bare_passes(model, batches):
    def passes():
        with model.frozen():
            for xb, yb in batches:
                for _ in range(BARE_PASSES):
                    inputs = xb.clone().requires_grad_(True)
                    torch.autograd.grad(F.cross_entropy(model(inputs), yb, reduction="sum"), inputs)
    return passes


def run(settings: Settings):
    section = new_section(KEY, TITLE, settings)
    n, batch = (4, 2) if settings.quick else (1000, 100)  # the 1,000 test images
    checkpoints = [("standard", SHIPPED_S4)] if settings.quick else [("standard", SHIPPED_S4), ("robust", ROBUST_S4)]
    with Stopwatch(section):
        for label, checkpoint in checkpoints:
            model_text = _measure(section, settings, label, checkpoint, n, batch)
            section.notes.append(f"Model ({label}): {model_text}.")
    section.notes += [
        "Both models: `create_model('s4', tokenizer='patch', patch_size=4, d_model=64, n_layers=2, d_state=32, "
        "dt_min=0.01, dt_max=1.0, activation='gelu')` (L = 49); the robust one adds AdS (ReLU) and PGD-AT. "
        f"Data: the first {n} MNIST test images with their labels.",
        f"Ours: `make_attack('pgd', model, eps={EPS}, steps={STEPS}, step_size={ALPHA}, random_start=True, "
        f"batch_size={batch}).run(x, y)` on all {n} images, timed end to end (input checks, steps, final "
        "evaluation, result). Each image returns its first successful iterate, so it leaves the batch there: "
        "on the standard model most images are fooled within a step or two and ours does a fraction of the "
        "passes; on the robust model most images survive all ten steps, so both engines do nearly the same work "
        "and the ratio is engine against engine.",
        f"Peer: `torchattacks.PGD(model, eps={EPS}, alpha={ALPHA}, steps={STEPS}, random_start=True)`, called "
        "batch by batch; it does no final evaluation. It runs inside `model.frozen()` (parameters frozen, "
        "kernels cached: the same model state as ours) and, on the standard model, also after a plain "
        "`model.eval()`.",
        f"Bare: inside `model.frozen()`, {BARE_PASSES} x (forward, cross-entropy, `torch.autograd.grad` to the "
        "input) per batch: the arithmetic a PGD that steps every image to the end cannot avoid. Targets from the "
        "issue: at least as fast as torchattacks, within 1.3x of the bare passes.",
    ]
    return section


def _measure(section, settings: Settings, label: str, checkpoint, n: int, batch: int) -> str:
    model, model_text = shipped_s4(settings, checkpoint)
    x, y, _ = mnist_batch(n, settings, model)
    batches = _batches(x, y, batch)
    ours_attack = make_attack("pgd", model, eps=EPS, steps=STEPS, step_size=ALPHA, random_start=True,
                              batch_size=batch, seed=0)
    outcome = {}
    runs = {"ours": lambda: outcome.update(result=ours_attack.run(x, y)),
            "torchattacks_frozen": _torchattacks_pgd(model, batches, True),
            "bare": _bare_passes(model, batches)}
    if label == "standard":
        runs["torchattacks_eval"] = _torchattacks_pgd(model, batches, False)
    repeats = settings.repeats(3, 1)
    timings = {name: section.add_timing(f"{label}.{name}", timing)
               for name, timing in measure_interleaved(runs, repeats).items()}
    t_ours, t_ta, t_bare = timings["ours"], timings["torchattacks_frozen"], timings["bare"]
    result = outcome["result"]
    robust = 1.0 - result.success.float().mean().item()
    what = f"PGD-{STEPS}, {n} images in batches of {batch}, {label} S4 (robust acc. {robust:.1%}, " \
           f"{result.backward_calls / n:.1f} fwd+bwd per image)"
    section.rows += [
        Row(key=f"{label}-vs-torchattacks", what=f"{what} vs torchattacks (same frozen model)", unit="s",
            ours=t_ours.median, ours_cpu=t_ours.cpu_median, peer=t_ta.median,
            peer_name="torchattacks.PGD in model.frozen()",
            ratio_kind="speedup", targets=[Target("ratio", ">=", 1.0)], repeats=f"{repeats} each, interleaved",
            memory=memory_text(ours=t_ours.peak_rss_mb, peer=t_ta.peak_rss_mb)),
        Row(key=f"{label}-vs-bare", what=f"{what} vs {BARE_PASSES} bare fwd+bwd passes", unit="s",
            ours=t_ours.median, ours_cpu=t_ours.cpu_median, peer=t_bare.median,
            peer_name=f"{BARE_PASSES} x (forward + input gradient) per batch",
            ratio_kind="overhead", targets=[Target("ratio", "<=", 1.3)], repeats=f"{repeats} each, interleaved",
            memory=memory_text(bare=t_bare.peak_rss_mb)),
    ]
    if "torchattacks_eval" in timings:
        t_plain = timings["torchattacks_eval"]
        section.rows.append(Row(
            key=f"{label}-vs-torchattacks-eval", what=f"{what} vs torchattacks (model.eval(), as users call it)",
            unit="s", ours=t_ours.median, ours_cpu=t_ours.cpu_median, peer=t_plain.median,
            peer_name="torchattacks.PGD after model.eval()", ratio_kind="speedup",
            targets=[Target("ratio", ">=", 1.0)], repeats=f"{repeats} each, interleaved",
            memory=memory_text(peer=t_plain.peak_rss_mb)))
    return model_text
