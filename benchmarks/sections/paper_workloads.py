"""What users run on paper-scale models: PGD-10 through the app's handler, AutoAttack on one image, robust accuracy
under PGD-10 beside torchattacks, and one epoch of PGD-AT for the shipped CIFAR-10 S4 configuration."""
from __future__ import annotations

import contextlib
import os
import tempfile
import time

import torch

from ssm_lab.datasets.info import DATASETS

from ..harness import measure, measure_interleaved
from ..paper_models import forward_input_grad, images
from ..results import Row, Target
from .common import UNBREAKABLE_EPS, own_labels

INTERACTIVE_TARGET_S = {"mamba": 1.5, "s4": 0.5}
CIFAR = DATASETS["cifar10"]  # its threat model: eps 8/255, PGD step 2/255
ROBUST_IMAGES = {"mamba": 2, "s4": 20}  # full mode; each image costs 11 passes of the model
EPOCH_IMAGES, TRAIN_BATCH, TRAIN_BATCHES = 50_000, 64, 2
# a random-weight model's logits barely move within 8/255, so every sub-attack runs in full (thousands of passes):
# the row stops there and says so
AUTOATTACK_BUDGET_S = 45.0
NAMES = {"mamba": "Mamba", "s4": "S4"}


def cifar_images(n: int, split: str = "test") -> tuple[torch.Tensor | None, str]:
    """The first n CIFAR-10 images of a split when the data is there, else None and why."""
    from ssm_lab.data import load_dataset

    try:
        x, _ = load_dataset("cifar10", split).tensors(list(range(n)))
    except Exception as error:  # noqa: BLE001 - the figure is reported on random images instead, and says so
        return None, f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return x, f"the first {n} CIFAR-10 {split} images"


@contextlib.contextmanager
def served(models: dict):
    """The models saved as checkpoints in a temporary folder that the app reads as its shipped checkpoints."""
    from app import models as app_models
    from ssm_models.hub import save_pretrained

    with tempfile.TemporaryDirectory() as root:
        for name, model in models.items():
            save_pretrained(model, os.path.join(root, name))
        previous = os.environ.get("SSM_LAB_CHECKPOINTS")
        os.environ["SSM_LAB_CHECKPOINTS"] = root
        app_models.MODELS.clear()
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("SSM_LAB_CHECKPOINTS")
            else:
                os.environ["SSM_LAB_CHECKPOINTS"] = previous
            app_models.MODELS.clear()


def _interactive(section, settings, models: dict, cifar_ok: bool) -> None:
    from app.handlers import run_attack
    from app.request_types import AttackRequest

    dataset = "CIFAR-10" if cifar_ok else "MNIST"
    args = dict(source="dataset", dataset=dataset, index=0, upload=None, sketch=None, attack="PGD (Linf)",
                eps=str(UNBREAKABLE_EPS), steps=2 if settings.quick else 10, step_size=0, restarts=1,
                target="none", seed=0)
    names = {arch: f"paper-{arch}" for arch in models}
    with served({names[arch]: model for arch, model in models.items()}):
        for arch in models:
            request = AttackRequest(model=names[arch], **args)
            timing = section.add_timing(f"{arch}.app_pgd", measure(lambda: run_attack(request),
                                                                   settings.repeats(2, 1), memory=False))
            section.rows.append(Row(
                key=f"{arch}-app-pgd", what=f"{NAMES[arch]} PGD-{args['steps']} on one image through "
                "`app.handlers.run_attack`", unit="s", ours=timing.median, ours_cpu=timing.cpu_median,
                targets=[Target("ours", "<=", INTERACTIVE_TARGET_S[arch], "s")], repeats=f"{timing.repeats}"))
            # the attack's own arithmetic: what no handler, plot or analysis can go below
            steps = args["steps"]
            passes = section.add_timing(f"{arch}.grad_1", measure(
                forward_input_grad(models[arch], images(1, models[arch])), settings.repeats(5, 1), memory=False)
            ).scaled(steps, f"{steps} x one pass")
            section.rows.append(Row(
                key=f"{arch}-app-pgd-vs-passes", what=f"{NAMES[arch]} PGD-{steps} through the app vs its {steps} "
                "forward + input-gradient passes alone", unit="s", ours=timing.median, ours_cpu=timing.cpu_median,
                peer=passes.median, peer_name=f"{steps} x one forward + input gradient at batch 1, same model",
                ratio_kind="overhead", repeats=f"{timing.repeats}; passes {passes.repeats}"))


class Deadline:
    """A cancel event (`is_set()`) that fires `seconds` after it is made: bounds a benchmark row's cost."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def is_set(self) -> bool:
        return time.perf_counter() > self.end


def _autoattack(section, settings, models: dict, x_one: dict) -> list[str]:
    from ssm_lab.attacks import make_attack

    version = dict(version="custom", sub_attacks=["apgd-ce"]) if settings.quick else dict(version="standard")
    notes = []
    for arch, model in models.items():
        x = x_one[arch]
        y = own_labels(model, x)
        attack = make_attack("autoattack", model, eps=CIFAR.eps, seed=0, **version)
        results = []
        timing = section.add_timing(f"{arch}.autoattack", measure(
            lambda: results.append(attack.run(x, y, cancel=Deadline(AUTOATTACK_BUDGET_S))), 1, warmup=0,
            memory=False))
        result = results[-1]
        finished = ", ".join(result.details.get("finished_sub_attacks", [])) or "none"
        stopped = f", stopped at the {AUTOATTACK_BUDGET_S:g} s budget" if result.cancelled else ""
        section.rows.append(Row(
            key=f"{arch}-autoattack", what=f"{NAMES[arch]} AutoAttack {version['version']}, one image, eps 8/255"
            + stopped, unit="s", ours=timing.median, ours_cpu=timing.cpu_median, repeats="once, no warm-up"))
        notes.append(f"{NAMES[arch]} AutoAttack: image fooled: {bool(result.success.all())}; cancelled at the "
                     f"budget: {result.cancelled}; sub-attacks finished: {finished}.")
    return notes


def _robust_throughput(section, settings, models: dict, x_all: torch.Tensor | None) -> None:
    import torchattacks

    from ssm_lab.evaluate import evaluate

    steps = 2 if settings.quick else 10
    for arch, model in models.items():
        n = 2 if settings.quick else ROBUST_IMAGES[arch]
        cfg = model.config
        x = x_all[:n] if x_all is not None and not settings.quick else torch.rand(
            n, cfg.in_channels, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0))
        y = own_labels(model, x)  # every image starts correct, so every image is attacked
        spec = {"name": "pgd", "steps": steps, "step_size": UNBREAKABLE_EPS / 4}
        peer = torchattacks.PGD(model, eps=UNBREAKABLE_EPS, alpha=UNBREAKABLE_EPS / 4, steps=steps,
                                random_start=True)

        def torchattacks_accuracy():
            with model.frozen():
                adv = peer(x, y)
                with torch.no_grad():
                    return (model(adv).argmax(1) == y).float().mean()

        timings = measure_interleaved({"ours": lambda: evaluate(model, x, y, [dict(spec)], eps=UNBREAKABLE_EPS,
                                                                batch_size=n, checks=0),
                                       "torchattacks": torchattacks_accuracy}, 1, warmup=0, memory=False)
        ours = section.add_timing(f"{arch}.robust_accuracy", timings["ours"])
        theirs = section.add_timing(f"{arch}.robust_accuracy_torchattacks", timings["torchattacks"])
        section.rows.append(Row(
            key=f"{arch}-robust-accuracy", what=f"{NAMES[arch]} robust accuracy under PGD-{steps}, {n} images in "
            f"one batch", unit="images/s", ours=n / ours.median, peer=n / theirs.median,
            peer_name="torchattacks.PGD + a clean-accuracy pass, same images", ratio_kind="fraction",
            repeats="once each, in turns, no warm-up"))


def _pgd_at_epoch(section, settings) -> str:
    """PGD-AT steps of the shipped CIFAR-10 S4 configuration on 2 threads, extrapolated to 50,000 images."""
    from ssm_lab.methods import MethodStep, ThreatModel
    from ssm_models import create_model

    from .throughput import _training_script

    script = _training_script()
    config = dict(script.CIFAR, **script.STATE["s4"], image_size=32, in_channels=3)
    if settings.quick:
        config.update(d_model=8, n_layers=1, d_state=4)
    torch.manual_seed(0)
    model = create_model("s4", **config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=2e-4)
    steps = 2 if settings.quick else 10
    threat = ThreatModel(eps=CIFAR.eps, step_size=CIFAR.pgd_step, steps=steps)
    method = MethodStep("pgd-at", model, optimizer, threat, 0)
    x, source = cifar_images(TRAIN_BATCH, "train")
    if x is None:
        x, source = torch.rand(TRAIN_BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(0)), "random images"
    y = torch.arange(TRAIN_BATCH) % 10
    batches = -(-EPOCH_IMAGES // TRAIN_BATCH)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model.train()
        timing = measure(lambda: method(x, y), settings.repeats(TRAIN_BATCHES, 1), memory=False)
    finally:
        torch.set_num_threads(previous)
    epoch = section.add_timing("s4.pgd_at_epoch", timing.scaled(
        batches, f"median of {timing.repeats} steps of batch {TRAIN_BATCH} times {batches} batches"))
    section.rows.append(Row(
        key="s4-pgd-at-epoch", what=f"One epoch of PGD-AT (PGD-{steps}) on CIFAR-10's 50,000 training images, shipped "
        "CIFAR-10 S4 configuration, 2 threads (extrapolated)", unit="s", ours=epoch.median, ours_cpu=epoch.cpu_median,
        repeats=f"{timing.repeats} steps timed after 1 warm-up, times {batches}"))
    return (f"PGD-AT epoch: `create_model('s4', {config})` (the shipped CIFAR-10 S4 configuration from "
            f"`scripts/train_checkpoints.py`), `MethodStep('pgd-at')` with AdamW, eps 8/255, step 2/255, PGD-{steps}, "
            f"batch {TRAIN_BATCH} of {source}, 2 torch threads; the median step is multiplied by the {batches} "
            "batches of an epoch (data loading and the per-epoch curves are not included): an extrapolation.")


def attack_rows(section, settings, models: dict) -> list[str]:
    """Adds the attack and training rows; returns the notes that explain them."""
    n_robust = max(ROBUST_IMAGES.values())
    x_cifar, cifar_source = (None, "quick mode") if settings.quick else cifar_images(n_robust)
    x_one = {arch: (x_cifar[:1] if x_cifar is not None else torch.rand(
        1, m.config.in_channels, m.config.image_size, m.config.image_size, generator=torch.Generator().manual_seed(0)))
        for arch, m in models.items()}
    _interactive(section, settings, models, x_cifar is not None)
    _robust_throughput(section, settings, models, x_cifar)
    epoch_note = _pgd_at_epoch(section, settings)
    notes = _autoattack(section, settings, models, x_one)
    images = cifar_source if x_cifar is not None else f"seeded random images (CIFAR-10 unavailable: {cifar_source})"
    return notes + [
        "Interactive: `app.handlers.run_attack` (the web app's Attack button: load through the model cache, input "
        "preparation, the attack, the error-scaling analysis, figures, saved artefacts) on test image #0, the "
        "models saved with `save_pretrained` into a temporary folder given as `SSM_LAB_CHECKPOINTS`; eps 1/1020 "
        "(a quarter of one grey level) so the label never flips and every step is spent. Targets from the issue: "
        f"≤ {INTERACTIVE_TARGET_S['mamba']} s Mamba, ≤ {INTERACTIVE_TARGET_S['s4']} s S4. Beside each, the same "
        "request against the attack's own arithmetic: its gradient passes alone (one forward + input gradient of "
        "the image, timed in isolation, times the steps); the rest of the request is a few more forwards (clean "
        "prediction, the 8-bit PNG check, the error-scaling analysis' clean and adversarial passes with probes), "
        "the analysis' float64 errors and the figures. The difference between the two rows is the handler's share; "
        "when the passes alone exceed the target, only a faster model pass can meet it.",
        "AutoAttack: `make_attack('autoattack', model, eps=8/255, version='standard').run(x, y)` on one image "
        "labelled by the model's own prediction, stopped through its cancel event after "
        f"{AUTOATTACK_BUDGET_S:g} s of wall time (a random-weight model's logits barely move within 8/255, so "
        "every sub-attack would run in full: thousands of passes). Reported, no target.",
        f"Robust accuracy: `ssm_lab.evaluate.evaluate(model, x, y, [pgd, steps 10, step eps/4], eps=1/1020, "
        f"checks=0)` on {images} labelled by the model (every image attacked, every step spent) beside "
        "`torchattacks.PGD(eps=1/1020, alpha=eps/4, steps=10, random_start=True)` plus one forward pass for the "
        f"accuracy, in `model.frozen()`. Measured on {ROBUST_IMAGES['s4']} images (S4) and {ROBUST_IMAGES['mamba']} "
        "(Mamba) rather than 1,000 to fit the suite's time: the figure is a rate (images/s).",
        epoch_note,
    ]
