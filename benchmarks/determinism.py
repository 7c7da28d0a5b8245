"""Same request, same answer: `python -m benchmarks.determinism` repeats every attack of the app, bit for bit."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.verdict import report_and_exit_code

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5
SEED = 7
CROSS_PROCESS = ("PGD (Linf)", "Square", "APGD-T")  # gradient, random search, targeted: each in two fresh processes
# the only parts of an answer allowed to differ between two identical requests (wall-clock time, fresh run folder)
VARYING = ("the seconds in the summary and the run card", "the download paths")


def requests(model: str, index: int) -> dict[str, dict]:
    """Label -> AttackRequest fields (the /attack endpoint's parameters): every attack of the app's menu, and PGD
    with a target class."""
    from app import opening
    from app.attack_menu import ATTACK_MENU

    out = {}
    for label, (_, fixed) in ATTACK_MENU.items():
        out[label] = dict(model=model, source="dataset", dataset=opening.DATASET, index=index, upload=None, sketch=None,
                          attack=label, eps="2" if fixed["norm"] == "L2" else opening.EPS, steps=STEPS, step_size=0,
                          restarts=1, target="none", seed=SEED)
    out["PGD (Linf), target 3"] = {**out["PGD (Linf)"], "target": "3"}
    return out


def _canonical(value) -> bytes:
    """Exact bytes of nested results: floats as repr (round-trips every bit), arrays with dtype and shape."""
    def default(obj):
        if isinstance(obj, np.ndarray):
            return {"dtype": str(obj.dtype), "shape": obj.shape, "sha256": hashlib.sha256(obj.tobytes()).hexdigest()}
        if isinstance(obj, np.generic):
            return obj.item()
        return repr(obj)

    return json.dumps(value, default=default, sort_keys=True).encode()


def _without_seconds(card: dict) -> dict:
    return {**card, "results": {k: v for k, v in card["results"].items() if k != "seconds"}}


def fingerprint(out) -> dict[str, str]:
    """sha256 of every part of run_attack's answer, wall-clock seconds and download paths aside."""
    png, npy, card_path = (Path(p) for p in out.files)
    parts = {
        "clean image": out.clean, "adversarial image": out.adversarial, "perturbation image": out.perturbation,
        "summary": re.sub(r"- [\d.]+ s, seed", "- <seconds> s, seed", out.summary),
        "top-k figure": out.topk.to_plotly_json()["data"], "trace figure": out.trace.to_plotly_json()["data"],
        "error-scaling figure": out.scaling.to_plotly_json()["data"],
        "token-error figure": out.tokens.to_plotly_json()["data"], "run card": _without_seconds(out.card),
        "adversarial.npy": np.load(npy), "adversarial.png": png.read_bytes(),
        "run_card.json": _without_seconds(json.loads(card_path.read_text())),
    }
    return {name: hashlib.sha256(value if isinstance(value, bytes) else _canonical(value)).hexdigest()
            for name, value in parts.items()}


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return [name for name in a if a[name] != b.get(name)]


def attack_once(kwargs: dict) -> tuple[dict[str, str], float]:
    from app import handlers
    from app.request_types import AttackRequest

    start = time.perf_counter()
    out = handlers.run_attack(AttackRequest(**kwargs), progress=lambda *args, **kw: None)
    return fingerprint(out), time.perf_counter() - start


def in_process(model: str, index: int, labels=None, log=None) -> dict[str, dict]:
    """Each request twice in this process: first with the model freshly loaded, then from the app's model cache."""
    from app.models import MODELS

    results = {}
    for label, kwargs in requests(model, index).items():
        if labels and label not in labels:
            continue
        MODELS.clear()
        first, seconds_first = attack_once(kwargs)
        second, seconds_second = attack_once(kwargs)
        results[label] = {"first": first, "second": second, "differ": differences(first, second),
                          "seconds": (seconds_first, seconds_second)}
        if log:
            log(f"{label}: {'identical' if not results[label]['differ'] else results[label]['differ']} "
                f"({seconds_first:.1f} s, {seconds_second:.1f} s)")
    return results


def children(model: str, index: int, labels, threads=(1, 1)) -> list[dict[str, dict[str, str]]]:
    """The same requests in fresh Python processes started side by side, one per entry of `threads` (its torch
    threads); each returns the fingerprints of its first answer to each request."""
    command = [sys.executable, "-m", "benchmarks.determinism", "--child", "--model", model, "--index", str(index),
               "--attacks", *labels]
    procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "SSM_LAB_TORCH_THREADS": str(n), "OMP_NUM_THREADS": str(n)})
             for n in threads]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode:
            raise RuntimeError(f"child process failed ({proc.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def through_server(model: str, index: int, checkpoints: Path, labels) -> dict[str, dict]:
    """The same requests twice each through a live `python -m app` server and gradio_client."""
    from gradio_client import Client

    from testkit.app_process import running_app

    results = {}
    with tempfile.TemporaryDirectory() as tmp, running_app(checkpoints, Path(tmp) / "server.log") as (url, _):
        client = Client(url, verbose=False)
        for label in labels:
            kwargs = requests(model, index)[label]
            answers = []
            for _ in range(2):
                clean, adv, delta, summary, *_figures, files, card = client.predict(**kwargs, api_name="/attack")
                images = [Path(p).read_bytes() for p in (clean, adv, delta)]
                npy = np.load(next(p for p in files if p.endswith(".npy")))
                seconds_free = re.sub(r"- [\d.]+ s, seed", "", summary)
                answers.append({"images": hashlib.sha256(b"".join(images)).hexdigest(),
                                "summary": hashlib.sha256(seconds_free.encode()).hexdigest(),
                                "run card": hashlib.sha256(_canonical(_without_seconds(card))).hexdigest(),
                                "adversarial.npy": hashlib.sha256(_canonical(npy)).hexdigest()})
            results[label] = {"first": answers[0], "second": answers[1], "differ": differences(*answers)}
    return results


def run(model: str, index: int, checkpoints: Path | None, server: bool = True, log=None) -> dict:
    """In-process pairs for every attack, two fresh processes for CROSS_PROCESS (plus one with 2 threads, reported
    only), and, with `server`, the live app."""
    with _serving(checkpoints):
        local = in_process(model, index, log=log)
        *processes, two_threads = children(model, index, CROSS_PROCESS, threads=(1, 1, 2))
    cross = {label: {"differ_between_processes": differences(processes[0][label], processes[1][label]),
                     "differ_from_in_process": differences(processes[0][label], local[label]["first"]),
                     "differ_with_2_threads": differences(two_threads[label], local[label]["first"])}
             for label in CROSS_PROCESS}
    live = through_server(model, index, checkpoints or ROOT / "checkpoints", CROSS_PROCESS[:2]) if server else {}
    for label, answer in live.items():  # the same hash of the same float32 array as in `fingerprint`
        answer["npy_differs_from_in_process"] = answer["first"]["adversarial.npy"] != \
            local[label]["first"]["adversarial.npy"]
    return {"in_process": local, "cross_process": cross, "server": live}


@contextlib.contextmanager
def _serving(checkpoints: Path | None):
    """The app's checkpoint folder for this process and its children (None: the shipped checkpoints)."""
    from app.models import MODELS

    previous = os.environ.get("SSM_LAB_CHECKPOINTS")
    if checkpoints is not None:
        os.environ["SSM_LAB_CHECKPOINTS"] = str(checkpoints)
    MODELS.clear()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SSM_LAB_CHECKPOINTS", None)
        else:
            os.environ["SSM_LAB_CHECKPOINTS"] = previous
        MODELS.clear()


def table(report: dict) -> str:
    lines = ["| attack | same request twice (in process) | seconds (1st / 2nd) |", "|---|---|---:|"]
    for label, r in report["in_process"].items():
        verdict = "bit-identical" if not r["differ"] else "**differs: " + ", ".join(r["differ"]) + "**"
        lines.append(f"| {label} | {verdict} | {r['seconds'][0]:.1f} / {r['seconds'][1]:.1f} |")
    lines += ["", "| attack | two fresh processes | process vs in-process | 2 torch threads vs 1 (reported only) |",
              "|---|---|---|---|"]
    say = lambda names: "bit-identical" if not names else "differs: " + ", ".join(names)  # noqa: E731
    for label, r in report["cross_process"].items():
        lines.append(f"| {label} | {say(r['differ_between_processes'])} | {say(r['differ_from_in_process'])} | "
                     f"{say(r['differ_with_2_threads'])} |")
    if report["server"]:
        lines += ["", "| attack | live server, same request twice | server's .npy vs in-process |", "|---|---|---|"]
        for label, r in report["server"].items():
            lines.append(f"| {label} | {say(r['differ'])} | "
                         f"{'differs' if r['npy_differs_from_in_process'] else 'bit-identical'} |")
    return "\n".join(lines)


def failures(report: dict) -> list[str]:
    bad = [f"{label}: {r['differ']}" for label, r in report["in_process"].items() if r["differ"]]
    bad += [f"{label} across processes: {r['differ_between_processes'] + r['differ_from_in_process']}"
            for label, r in report["cross_process"].items()
            if r["differ_between_processes"] or r["differ_from_in_process"]]
    bad += [f"{label} through the server: {r['differ']}" for label, r in report["server"].items()
            if r["differ"] or r["npy_differs_from_in_process"]]
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="mnist-s4-pgdat", help="a checkpoint name the app offers")
    parser.add_argument("--index", type=int, default=0, help="MNIST test image")
    parser.add_argument("--checkpoints", type=Path, default=None, help="the app's checkpoint folder (default: shipped)")
    parser.add_argument("--no-server", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--attacks", nargs="*", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from app.gradio_compat import skip_gradio_stub_writing
    from ssm_lab.threads import torch_threads

    skip_gradio_stub_writing()  # as `python -m app` does: a third of gradio's import time
    import torch

    torch.set_num_threads(torch_threads())  # as the app does: 1 unless SSM_LAB_TORCH_THREADS says otherwise
    if args.child:  # one line of JSON for the parent: fingerprints of the first answer to each request
        print(json.dumps({label: attack_once(requests(args.model, args.index)[label])[0] for label in args.attacks}))
        return 0
    start = time.time()
    report = run(args.model, args.index, args.checkpoints, server=not args.no_server,
                 log=lambda text: print(text, file=sys.stderr))
    headline = (f"model {args.model}, MNIST test image {args.index}, {STEPS} steps, seed {SEED}; "
                f"{time.time() - start:.0f} s; allowed to vary: {'; '.join(VARYING)}")
    return report_and_exit_code(headline, table(report), failures(report), "DIFFERS")


if __name__ == "__main__":
    raise SystemExit(main())
