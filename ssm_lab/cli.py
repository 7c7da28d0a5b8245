"""`ssm-lab`: train, evaluate, attack, analyze, report, import-reference, serve, list, data.

Benchmarks: python -m benchmarks."""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import subprocess
import sys
from pathlib import Path

from ssm_models.bounds import check_number
from ssm_models.choices import ADS_ACTIVATIONS, REFERENCE_CLASS, TOKENIZERS
from ssm_models.errors import UserError

from .allocator import keep_freed_memory
from .attack_registry import ATTACK_NAMES, AUTOATTACK_VERSIONS, NORMS, unknown_attack
from .catalogue import ARCH_NAMES
from .cli_data import add_data_parser
from .datasets.info import DATASETS, MODEL_DATASETS
from .eps import eps_label, parse_eps
from .image_fit import FITS
from .method_names import METHODS


class CLIError(UserError):
    """A user-facing error: printed without a traceback, exit code 2."""


def _positive_int(text: str) -> int:
    return check_number("value", text, integer=True, positive=True, text=True, error=argparse.ArgumentTypeError)


_eps = functools.partial(parse_eps, error=argparse.ArgumentTypeError)  # 0.3 or 8/255


def _attack_name(text: str) -> str:
    if text not in ATTACK_NAMES:
        raise argparse.ArgumentTypeError(unknown_attack(text))
    return text


def _load(checkpoint: str):
    from ssm_models.hub import load_model, resolve_checkpoint

    return load_model(resolve_checkpoint(checkpoint))


def _dataset_for(model, requested: str | None, checkpoint: str) -> str:
    """The dataset to test on: the one asked for, else the one the checkpoint states (MNIST if it states none).
    A dataset whose images the model cannot take is refused here, naming the one it can."""
    from .attacks.base import model_image_shape
    from .data import dataset_info

    shapes = {key: (info.channels, info.image_size, info.image_size) for key, info in dataset_info().items()}
    stated = (model.config.meta or {}).get("dataset")
    name = requested or (stated if stated in shapes else "mnist")
    expected = model_image_shape(model)
    if expected is not None and shapes[name] != expected:
        fits = [d for d, shape in shapes.items() if shape == expected]
        hint = f"; use --dataset {fits[0]}" if fits else ""
        raise CLIError(f"{checkpoint} takes {'x'.join(map(str, expected))} images, {name} has "
                       f"{'x'.join(map(str, shapes[name]))}{hint}")
    return name


def _dataset_tensors(name: str, split: str, n: int, seed: int, data_dir: str | None):
    from .data import load_dataset, sample_indices

    ds = load_dataset(name, split, data_dir=data_dir)
    if ds.warning:
        print(f"warning: {ds.warning}", file=sys.stderr)
    idx = sample_indices(ds, min(n, len(ds.labels)), seed)
    x, y = ds.tensors(idx)
    info = {"dataset": name, "split": split, "source": ds.source, "n": len(y), "seed": seed,
            "indices": "stratified seeded sample" if n < len(ds.labels) else "all"}
    return ds, x, y, info


def _progress_bar(total_desc: str):
    from tqdm import tqdm

    bar = tqdm(total=1, desc=total_desc, file=sys.stderr)

    def update(done: int, total: int, message: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message[:60])
        bar.refresh()

    return bar, update


def cmd_train(a) -> None:
    from . import distributed
    from .train import TrainConfig, train

    model = {k: v for k, v in {"d_model": a.d_model, "n_layers": a.n_layers, "d_state": a.d_state,
                               "tokenizer": a.tokenizer, "patch_size": a.patch_size, "ads": a.ads,
                               "ads_bias": a.ads_bias or None}.items() if v is not None}
    cfg = TrainConfig(arch=a.arch, dataset=a.dataset, method=a.method, epochs=a.epochs, batch_size=a.batch_size,
                      lr=a.lr, eps=a.eps, step_size=a.step_size, attack_steps=a.attack_steps, beta=a.beta,
                      replays=a.replays, freeat_equal_budget=a.freeat_equal_budget, seed=a.seed, data_dir=a.data_dir,
                      augment=not a.no_augment, model=model, train_limit=a.train_limit, curve_points=a.curve_points,
                      val_points=a.val_points)
    distributed.init()  # under torchrun: one process per rank; otherwise nothing changes
    main = distributed.is_main()
    with distributed.leave_when_done():
        result = train(cfg, a.out, log=print if main else (lambda _message: None))
    if main:
        print(json.dumps({"best_val_adv_acc": result["best_val_adv_acc"], "wall_time_s": result["wall_time_s"]}))


def _attack_specs(a) -> list[dict]:
    """The --attack names as evaluate specs: each attack gets the options it takes (the registry says which)."""
    from .attacks import attack_params, default_norm

    options = {"steps": a.steps, "step_size": a.step_size, "restarts": a.restarts, "version": a.version}
    specs = []
    for name in a.attack:
        accepted = attack_params(name)
        spec = {"name": name, **{k: v for k, v in options.items() if v is not None and k in accepted}}
        if a.norm is None and default_norm(name) != "Linf":
            spec["norm"] = default_norm(name)
        specs.append(spec)
    return specs


def cmd_evaluate(a) -> None:
    from ssm_models.atomic import remove_stale_temporaries

    from . import distributed
    from .evaluate import evaluate
    from .run_lock import exclusive
    from .train import DEFAULT_THREAT

    model = _load(a.checkpoint)
    dataset = _dataset_for(model, a.dataset, a.checkpoint)
    _, x, y, info = _dataset_tensors(dataset, "test", a.n, a.seed, a.data_dir)
    distributed.init()  # under torchrun every rank attacks its share of the batches; rank 0 writes the report
    main = distributed.is_main()
    # two runs sharing a state file would each resume from it and overwrite the other's batches
    lock = exclusive(a.state + ".lock", f"evaluation state {a.state}") if a.state and main else contextlib.nullcontext()
    with lock:
        if a.state and main:  # a killed run's half-written state files: ours to remove now we hold the lock
            remove_stale_temporaries(Path(a.state).parent, Path(a.state).name)
        bar, update = _progress_bar("evaluate") if main else (None, None)
        with distributed.leave_when_done():
            try:
                eps = a.eps if a.eps is not None else DEFAULT_THREAT[dataset][0]
                report = evaluate(model, x, y, _attack_specs(a), eps=eps, norm=a.norm or "Linf",
                                  batch_size=a.batch_size, seed=a.seed, progress=update, state_path=a.state,
                                  data_info=info)
            finally:
                if bar is not None:  # closed before an error is printed, which is then the last line on the terminal
                    bar.close()
        if not main:
            return
        _write_json(report, a.out)
    lines = [f"clean {report['clean']['accuracy']:.4f} (n={report['n']})"]
    lines += [f"{r['attack']} {r['accuracy']:.4f}" for r in report["attacks"]]
    print("; ".join(lines) + f"; eps {report['threat_model']['eps_label']}", file=sys.stderr)


def cmd_attack(a) -> None:
    from .single import attack_image_file

    if len(a.attack) > 1:
        raise CLIError(f"attack runs one attack on one image, got --attack {' --attack '.join(a.attack)}; use "
                       "evaluate to compare several attacks on a test set")
    from .attacks import default_norm

    norm = a.norm or default_norm(a.attack[0])
    card = attack_image_file(_load(a.checkpoint), a.image, a.attack[0], out_dir=a.out_dir, eps=a.eps, norm=norm,
                             steps=a.steps, step_size=a.step_size, restarts=a.restarts, target=a.target, seed=a.seed,
                             checkpoint=a.checkpoint, fit=a.fit)
    print(json.dumps(card["results"], indent=1))


def cmd_analyze(a) -> None:
    from .analysis import error_scaling
    from .attacks import make_attack

    model = _load(a.checkpoint)
    dataset = _dataset_for(model, a.dataset, a.checkpoint)
    eps = a.eps if a.eps is not None else model.config.meta.get("threat_model", {}).get("eps", 0.1)
    out = {"checkpoint": a.checkpoint, "eps": eps, "attack": f"pgd-{a.steps}", "splits": {}}
    for split in ("train", "test"):
        _, x, y, info = _dataset_tensors(dataset, split, a.n, a.seed, a.data_dir)
        adv = make_attack("pgd", model, eps=eps, steps=a.steps, seed=a.seed).run(x, y).adv
        out["splits"][split] = {**error_scaling(model, x, adv), "data": info}
    _write_json(out, a.out)


def cmd_report(a) -> None:
    from .report import write_html_report

    docs = [json.loads(Path(p).read_text()) for p in a.inputs]
    write_html_report(docs, a.html)
    print(f"wrote {a.html}", file=sys.stderr)


def cmd_list(a) -> None:
    from ssm_models import list_models

    from .catalogue import catalogue_entries, threat_model_rows

    print("architectures:", ", ".join(list_models()))
    entries = catalogue_entries(a.root)
    if not entries:
        print(f"no checkpoints with weights under {a.root or 'the shipped checkpoints/'}")
        return
    headers, rows = threat_model_rows(entries)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    print("checkpoints (card metrics; AutoAttack, the headline, then the weaker PGD-10 at the dataset's threat model, "
          "Linf):")
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_serve(a) -> None:
    # The app sits above the engine; start it as its own process instead of importing it from here.
    args = [sys.executable, "-m", "app", "--host", a.host, "--port", str(a.port)] + (["--share"] if a.share else [])
    raise SystemExit(subprocess.call(args))


def cmd_import_reference(a) -> None:
    from ssm_models.reference import import_reference

    model = import_reference(a.path, arch=a.arch, dataset=a.dataset, ads=a.ads)
    from ssm_models.hub import save_pretrained

    save_pretrained(model, a.out)
    print(f"wrote {a.out}", file=sys.stderr)


def _write_json(obj: dict, path: str | None) -> None:
    text = json.dumps(obj, indent=1)
    if path:
        from ssm_models.atomic import atomic_write

        atomic_write(path, text)  # a killed run leaves the previous report or none, never half of one
    else:
        print(text)


class DEFAULTS(argparse.HelpFormatter):
    """Help texts end with "(default: X)" where X is set and the text does not already say its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not unset and "default" not in text and not action.required:
            text += " (default: %(default)s)"
        return text


COMPUTE_COMMANDS = ("train", "evaluate", "attack", "analyze", "import-reference")


def _per_dataset(field: str) -> str:
    """'MNIST 0.3, CIFAR-10 8/255': a threat-model value of each data set with shipped models, for --help."""
    return ", ".join(f"{DATASETS[name].display_name} {eps_label(getattr(DATASETS[name], field), approx=False)}"
                     for name in MODEL_DATASETS)


CHECKPOINT_HELP = "shipped checkpoint name, local directory, or Hub repo id[@revision]"
DATA_DIR_HELP = (f"folder holding {' and '.join(name + '/' for name in MODEL_DATASETS)} (default: $SSM_LAB_DATA, "
                 "else the Hub or its cache{}; see `ssm-lab data info`)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssm-lab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    parsers: dict[str, argparse.ArgumentParser] = {}

    def command(name: str, func, help: str, show_defaults: bool = True) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help, **({"formatter_class": DEFAULTS} if show_defaults else {}))
        q.set_defaults(func=func)
        parsers[name] = q
        return q

    def threads_arg(q, training: bool = False):
        fallback = ("torch's own, one per core (under torchrun, one per process)" if training else
                    "1: small-batch attacks slowed down 14x with more threads than idle cores")
        q.add_argument("--threads", type=_positive_int,
                       help=f"torch threads (default: $SSM_LAB_TORCH_THREADS, else {fallback})")

    t = command("train", cmd_train, "train a model")
    t.add_argument("--arch", required=True, help=" or ".join(", ".join(ARCH_NAMES).rsplit(", ", 1)))
    t.add_argument("--dataset", default="mnist", choices=list(DATASETS), help="training set")
    t.add_argument("--method", default="st", choices=METHODS,
                   help="standard training, or an adversarial-training method")
    t.add_argument("--epochs", type=_positive_int, default=10, help="passes over the training set")
    t.add_argument("--batch-size", type=_positive_int, default=64, help="images per step")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, cosine schedule)")
    t.add_argument("--eps", type=_eps, help=f"training budget, a number or k/255 (default: {_per_dataset('eps')})")
    t.add_argument("--step-size", type=_eps, help=f"attack step size (default: {_per_dataset('pgd_step')})")
    t.add_argument("--attack-steps", type=_positive_int, default=10, help="PGD steps of the training attack")
    t.add_argument("--beta", type=float, default=6.0, help="TRADES trade-off between clean and robust loss")
    t.add_argument("--replays", type=_positive_int, default=4, help="FreeAT: times each minibatch is replayed")
    t.add_argument("--freeat-equal-budget", action="store_true",
                   help="FreeAT: run epochs / replays passes, so it takes PGD-AT's optimiser steps for --epochs")
    t.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and attacks")
    t.add_argument("--d-model", type=_positive_int, help="width (default: the architecture's)")
    t.add_argument("--n-layers", type=_positive_int, help="depth (default: the architecture's)")
    t.add_argument("--d-state", type=_positive_int, help="state size (default: the architecture's)")
    t.add_argument("--tokenizer", choices=TOKENIZERS, help="how an image becomes a sequence")
    t.add_argument("--patch-size", type=_positive_int, help="side of a patch token (patch tokenizer)")
    t.add_argument("--ads", choices=ADS_ACTIVATIONS, help="add Adaptive Scaling with this activation")
    t.add_argument("--ads-bias", action="store_true", help="AdS with biases and the additive branch")
    t.add_argument("--no-augment", action="store_true", help="no random shifts (and, on CIFAR-10, flips)")
    t.add_argument("--data-dir", help=DATA_DIR_HELP.format(""))
    t.add_argument("--train-limit", type=_positive_int, help=argparse.SUPPRESS)  # smoke runs: first N images only
    t.add_argument("--curve-points", type=_positive_int, default=500, help=argparse.SUPPRESS)
    t.add_argument("--val-points", type=_positive_int, default=500, help=argparse.SUPPRESS)
    t.add_argument("--out", required=True, help="checkpoint directory to write (resumes a run found there)")

    def attack_args(q, many: bool):
        q.add_argument("checkpoint", help=CHECKPOINT_HELP)
        q.add_argument("--attack", action="append", default=None, type=_attack_name, choices=ATTACK_NAMES,
                       help="the attack (default: pgd)" + ("; repeat it for several" if many else ""))
        q.add_argument("--eps", type=_eps, default=None,
                       help="budget, a number or k/255 (default: the threat model of the dataset or the checkpoint)")
        q.add_argument("--norm", default=None, choices=NORMS,
                       help="default Linf (L2 for the attacks defined for L2 only)")
        q.add_argument("--steps", type=_positive_int, help="iterations, for the attacks that take them (default: "
                       "the attack's own, e.g. PGD 10, APGD 100)")
        q.add_argument("--step-size", type=_eps, help="PGD step size (default 2.5 * eps / steps)")
        q.add_argument("--restarts", type=_positive_int, help="random restarts, for the attacks that take them "
                       "(default 1)")
        q.add_argument("--version", default="standard", choices=AUTOATTACK_VERSIONS,
                       help="AutoAttack version")
        q.add_argument("--seed", type=int, default=0, help="seed of random starts and sampling")
        q.add_argument("--data-dir", help=DATA_DIR_HELP.format(", else the bundled sample"))

    def sample_args(q, what: str, n: int, n_help: str):
        q.add_argument("--dataset", choices=list(DATASETS), help=f"{what} (default: the checkpoint's own)")
        q.add_argument("--n", type=_positive_int, default=n, help=n_help)

    e = command("evaluate", cmd_evaluate, "clean and robust accuracy on the test set")
    attack_args(e, many=True)
    sample_args(e, "test set", 1000, "test images (a stratified seeded sample)")
    e.add_argument("--batch-size", type=_positive_int, default=100, help="images per attack batch")
    e.add_argument("--state", help="resume file for long runs")
    e.add_argument("--out", help="report JSON (default: print it)")

    at = command("attack", cmd_attack, "attack one image file")
    attack_args(at, many=False)
    at.add_argument("--image", required=True, help="any image file Pillow reads (PNG, JPEG, ...), up to 20 MB and 40 "
                    "megapixels; converted and resized to the model's input")
    at.add_argument("--fit", choices=list(FITS), default="auto",
                    help="how the image becomes the model's input: " + "; ".join(f"{k}: {v}" for k, v in FITS.items()))
    at.add_argument("--target", type=int,
                    help="class index for a targeted attack (the attacks with a targeted mode)")
    at.add_argument("--out-dir", required=True, help="where the adversarial PNG, the lossless NPY and the run card go")

    an = command("analyze", cmd_analyze, "per-layer, per-component error scaling")
    an.add_argument("checkpoint", help=CHECKPOINT_HELP)
    sample_args(an, "test and training set", 256, "images per split")
    an.add_argument("--eps", type=_eps, help="PGD budget (default: the checkpoint's threat model, else 0.1)")
    an.add_argument("--steps", type=_positive_int, default=10, help="PGD steps")
    an.add_argument("--seed", type=int, default=0, help="seed of sampling and random starts")
    an.add_argument("--data-dir", help=DATA_DIR_HELP.format(""))
    an.add_argument("--out", help="analysis JSON (default: print it)")

    r = command("report", cmd_report, "self-contained HTML report from evaluate/analyze JSON files",
                show_defaults=False)
    r.add_argument("inputs", nargs="+", help="JSON files written by evaluate or analyze")
    r.add_argument("--html", required=True, help="the HTML file to write")

    ir = command("import-reference", cmd_import_reference, "convert a state_dict saved by the paper's code",
                 show_defaults=False)
    ir.add_argument("path", help="the reference code's state_dict (.pt; read with torch.load(weights_only=True))")
    ir.add_argument("--arch", required=True, choices=list(REFERENCE_CLASS),
                    help="the reference model: SSM mode='nplr' (s4) or 'diag' (dss), S6_SSM (mamba), S5_SSM (s5)")
    ir.add_argument("--dataset", required=True, choices=list(DATASETS), help="the dataset it was trained on")
    ir.add_argument("--ads", choices=ADS_ACTIVATIONS,
                    help="activation of the file's AdSS module (the reference does not store it)")
    ir.add_argument("--out", required=True, help="checkpoint directory to write")

    s = command("serve", cmd_serve, "start the web app")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for every one)")
    s.add_argument("--port", type=int, default=7860, help="port")
    s.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")

    li = command("list", cmd_list, "architectures, and checkpoints with their card metrics", show_defaults=False)
    li.add_argument("--root", help="a directory of checkpoints (default: the shipped checkpoints/)")

    for name in COMPUTE_COMMANDS:  # added last, so --threads ends each command's help as before
        threads_arg(parsers[name], training=name == "train")
    add_data_parser(sub)
    return p


def _set_torch_threads(args) -> None:
    import torch

    from .threads import torch_threads

    threads = torch_threads(args.threads, default=None if args.command == "train" else 1)
    if threads is not None:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "attack", "absent") is None:
        args.attack = ["pgd"]
    elif isinstance(getattr(args, "attack", None), str):
        args.attack = [args.attack]
    try:
        if args.command in COMPUTE_COMMANDS:
            _set_torch_threads(args)
        args.func(args)
    # UserError, and the engine's input checks that still raise a built-in type
    except (UserError, ValueError, OSError, KeyError) as exc:
        print(f"ssm-lab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
