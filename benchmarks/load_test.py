"""Load test: N concurrent gradio_client users, K attacks each, against one live app; results must equal a replay."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ssm_lab.attack_registry import TARGETED_MENU
from testkit.app_process import serving_app

START_TIMEOUT_S = 180
SMALLEST_TEST_SET = 1_000  # the bundled sample an offline app serves: every test set has these indices
DEFAULT_MODELS = ("mnist-s4-st", "mnist-dss-st", "mnist-s5-st", "mnist-s4-pgdat")
LINF_ATTACKS = ("FGSM", "PGD (Linf)", "APGD-CE", "APGD-T", "Square", "FAB-T")
L2_ATTACKS = ("PGD (L2)", "CW (L2)", "DeepFool (L2)")
LINF_EPS = ("2/255", "4/255", "8/255", "0.05", "0.1", "0.2", "0.3")
L2_EPS = ("0.5", "1.0", "2.0", "3.0")
QUEUE_FULL = "Queue is full"  # what gradio_client raises (QueueError) when the server answers 503 queue_full


# ----- the live server and what /proc says about it --------------------------------------------------------
@dataclass
class Server:
    url: str
    pid: int
    workdir: Path  # holds the server's private temp dirs and its log
    start_seconds: float

    @property
    def temp_dirs(self) -> tuple[Path, Path]:
        """gradio's cache (GRADIO_TEMP_DIR) and the server's tempfile.gettempdir() (TMPDIR)."""
        return self.workdir / "gradio", self.workdir / "tmp"


@contextlib.contextmanager
def live_server(workdir: Path, checkpoints: Path | None = None, **env_extra: str):
    """`python -m app` on a free port with one torch/OpenMP thread and private temp dirs; yields a Server."""
    workdir.mkdir(parents=True, exist_ok=True)
    for d in ("gradio", "tmp"):
        (workdir / d).mkdir(exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(workdir / "gradio"),
           "TMPDIR": str(workdir / "tmp"), **env_extra}
    for name in ("SSM_LAB_HOST", "SSM_LAB_PORT", "SSM_LAB_CHECKPOINTS"):
        env.pop(name, None)
    if checkpoints is not None:
        env["SSM_LAB_CHECKPOINTS"] = str(checkpoints)
    with serving_app(env, workdir / "server.log", START_TIMEOUT_S) as (url, pid, seconds):
        yield Server(url, pid, workdir, seconds)


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (the app may start helpers; memory is counted over all of them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_mib(pid: int, key: str) -> float:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) summed over the process tree, in MiB."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total / 1024


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5), so a phase's peak is its own."""
    ok = True
    for p in process_tree(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


# ----- requests and their results ----------------------------------------------------------------------------
def make_request(user: int, k: int, models: tuple[str, ...], quick: bool = False) -> dict:
    """The k-th attack of one user: models, attacks, budgets, images, seeds and targets vary; fixed per (user, k)."""
    rng = random.Random(1_000_003 * user + k)
    attack = rng.choice(LINF_ATTACKS + L2_ATTACKS)
    l2 = attack in L2_ATTACKS
    steps = rng.choice((4, 8) if attack == "Square" else (5, 10) if quick else (5, 10, 20))
    target = str(rng.randrange(10)) if attack in TARGETED_MENU and rng.random() < 0.3 else "none"
    # small budgets too: attacks that fail run every step, which keeps concurrent requests overlapping
    eps = rng.choice(L2_EPS if l2 else LINF_EPS)
    return dict(model=rng.choice(models), source="dataset", dataset="MNIST", index=rng.randrange(SMALLEST_TEST_SET),
                upload=None, sketch=None, attack=attack, eps=eps, steps=steps, step_size=0, restarts=1, target=target,
                seed=rng.randrange(10_000))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def digest(outputs) -> dict[str, str]:
    """Every returned value reduced to a hash; only wall-clock times (the summary's and the card's) are left out."""
    clean, adv, delta, summary, topk, trace, scaling, tokens, files, card = outputs
    out = {name: _sha(Path(path).read_bytes()) for name, path in (("clean", clean), ("adv", adv), ("delta", delta))}
    out["summary"] = _sha(re.sub(r"- [\d.]+ s, seed", "- (time) s, seed", summary).encode())
    for name, plot in (("topk", topk), ("trace", trace), ("scaling", scaling), ("tokens", tokens)):
        out[name] = _sha(json.dumps(plot, sort_keys=True).encode())
    for path in files:
        name = Path(path).name
        if name.endswith(".json"):  # the run card: drop its timing, keep the rest
            data = json.loads(Path(path).read_text())
            data["results"].pop("seconds", None)
            out[name] = _sha(json.dumps(data, sort_keys=True).encode())
        else:
            out[name] = _sha(Path(path).read_bytes())
    card = dict(card, results={k: v for k, v in card["results"].items() if k != "seconds"})
    out["card"] = _sha(json.dumps(card, sort_keys=True).encode())
    return out


@dataclass
class Outcome:
    user: int
    k: int
    request: dict
    digest: dict | None = None
    latency: float = 0.0  # the attempt that succeeded, from submission to result (includes queue wait)
    end_to_end: float = 0.0  # from the first attempt, refusals and back-off included
    rejections: list[str] = field(default_factory=list)
    error: str = ""


def run_one(client, outcome: Outcome, max_attempts: int = 40) -> Outcome:
    """Submit; on a queue-full refusal wait (growing, jittered) and retry the same request."""
    rng = random.Random(outcome.user * 7919 + outcome.k)
    first = time.perf_counter()
    for attempt in range(max_attempts):
        start = time.perf_counter()
        try:
            result = client.predict(**outcome.request, api_name="/attack")
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and reported, none is hidden
            text = f"{type(exc).__name__}: {exc}"
            if QUEUE_FULL not in str(exc):
                outcome.error = text
                return outcome
            outcome.rejections.append(text)
            time.sleep(min(4.0, 0.25 * 2 ** attempt) * (0.5 + rng.random()))
            continue
        outcome.latency = time.perf_counter() - start
        outcome.end_to_end = time.perf_counter() - first
        outcome.digest = digest(result)
        return outcome
    outcome.error = f"still refused after {max_attempts} attempts"
    return outcome


def client_for(server: Server, downloads: Path):
    from gradio_client import Client

    downloads.mkdir(parents=True, exist_ok=True)
    return Client(server.url, verbose=False, download_files=str(downloads))


def concurrent_phase(server: Server, requests: dict, downloads: Path) -> tuple[list[Outcome], float, float]:
    """One thread and one gradio_client session per user, all released at once; returns outcomes, wall time and
    the peak RSS sampled every 0.2 s."""
    users = sorted({u for u, _ in requests})
    outcomes: list[Outcome] = []
    lock, barrier = threading.Lock(), threading.Barrier(len(users))
    peak = [status_mib(server.pid, "VmRSS")]
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            peak[0] = max(peak[0], status_mib(server.pid, "VmRSS"))

    def user_thread(user: int):
        client = client_for(server, downloads / f"user-{user}")
        barrier.wait()
        for k in sorted(k for u, k in requests if u == user):
            out = run_one(client, Outcome(user, k, requests[user, k]))
            with lock:
                outcomes.append(out)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=user_thread, args=(u,)) for u in users]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    return sorted(outcomes, key=lambda o: (o.user, o.k)), wall, peak[0]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value is a measured one)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))] if ordered else float("nan")


def run(server: Server, users: int, attacks: int, models: tuple[str, ...], quick: bool, downloads: Path) -> dict:
    """Warm up, run the concurrent phase, replay every request sequentially on one session, compare."""
    requests = {(u, k): make_request(u, k, models, quick) for u in range(users) for k in range(attacks)}
    warm = client_for(server, downloads / "warm-up")
    for model in models:  # torch import and first model loads are start-up costs, not load
        warm.predict(**{**make_request(0, 0, models, quick), "model": model, "attack": "FGSM", "eps": "0.1"},
                     api_name="/attack")
    baseline = status_mib(server.pid, "VmRSS")
    hwm_reset = reset_peak(server.pid)
    outcomes, wall, sampled_peak = concurrent_phase(server, requests, downloads)
    peak_concurrent = status_mib(server.pid, "VmHWM")
    reset_peak(server.pid)
    replay_start = time.perf_counter()
    sequential = {}
    for key in sorted(requests):
        sequential[key] = run_one(warm, Outcome(*key, requests[key]))
    replay_wall = time.perf_counter() - replay_start
    mismatches = []
    for out in outcomes:
        ref = sequential[out.user, out.k]
        if out.digest is None or ref.digest is None:
            continue
        differing = sorted(name for name in set(out.digest) | set(ref.digest)
                           if out.digest.get(name) != ref.digest.get(name))
        if differing:
            mismatches.append({"user": out.user, "k": out.k, "attack": out.request["attack"],
                               "model": out.request["model"], "fields": differing})
    ok = [o for o in outcomes if o.digest is not None]
    return {
        "users": users, "attacks": attacks, "models": models, "requests": len(requests), "completed": len(ok),
        "errors": [(o.user, o.k, o.error) for o in outcomes if o.error],
        "replay_errors": [(o.user, o.k, o.error) for o in sequential.values() if o.error],
        "rejections": sum(len(o.rejections) for o in outcomes),
        "rejected_requests": sum(1 for o in outcomes if o.rejections),
        "rejected_then_completed": sum(1 for o in outcomes if o.rejections and o.digest is not None),
        "rejection_messages": sorted({m for o in outcomes for m in o.rejections}),
        "wall": wall, "throughput": len(ok) / wall, "latencies": [o.latency for o in ok],
        "end_to_end": [o.end_to_end for o in ok], "replay_wall": replay_wall,
        "replay_latencies": [o.latency for o in sequential.values() if o.digest is not None],
        "mismatches": mismatches, "compared": sum(1 for o in ok if sequential[o.user, o.k].digest is not None),
        "baseline_mib": baseline, "peak_mib": peak_concurrent, "peak_replay_mib": status_mib(server.pid, "VmHWM"),
        "sampled_peak_mib": sampled_peak, "hwm_reset": hwm_reset,
        "attack_mix": {a: sum(1 for r in requests.values() if r["attack"] == a) for a in LINF_ATTACKS + L2_ATTACKS},
    }


def markdown(report: dict, command: str, server_env: dict) -> str:
    lat, e2e, seq = report["latencies"], report["end_to_end"], report["replay_latencies"]

    def row(name, values):
        return (f"| {name} | {percentile(values, 50):.2f} | {percentile(values, 90):.2f} | "
                f"{percentile(values, 99):.2f} | {max(values, default=float('nan')):.2f} |")

    settings = ", ".join(f"{k}={v}" for k, v in server_env.items()) or "defaults"
    mix = ", ".join(f"{a} {n}" for a, n in report["attack_mix"].items() if n)
    lines = [
        f"`{command}`: {report['users']} gradio_client sessions (one thread each, released together) x "
        f"{report['attacks']} attacks = {report['requests']} requests on {len(report['models'])} models "
        f"({', '.join(report['models'])}); server settings: {settings}.",
        f"Attack mix: {mix}.",
        "",
        "| | value |", "|---|---:|",
        f"| requests completed | {report['completed']} / {report['requests']} |",
        f"| errors (anything but a queue-full refusal) | {len(report['errors'])} |",
        f"| queue-full refusals (requests refused at least once) | {report['rejections']} "
        f"({report['rejected_requests']}) |",
        f"| refused requests that completed on a later retry | {report['rejected_then_completed']} / "
        f"{report['rejected_requests']} |",
        f"| results equal to the sequential replay, bit for bit | {report['compared'] - len(report['mismatches'])}"
        f" / {report['compared']} |",
        f"| wall time, concurrent phase | {report['wall']:.1f} s |",
        f"| throughput, concurrent | {report['throughput']:.2f} requests/s |",
        f"| throughput, same requests one at a time | {len(seq) / report['replay_wall']:.2f} requests/s |",
        f"| server RSS before the load (after warm-up) | {report['baseline_mib']:.0f} MiB |",
        f"| server peak RSS (VmHWM), concurrent phase | {report['peak_mib']:.0f} MiB |",
        f"| server peak RSS (VmHWM), sequential replay | {report['peak_replay_mib']:.0f} MiB |",
        "",
        "| latency (s) | p50 | p90 | p99 | max |", "|---|---:|---:|---:|---:|",
        row("concurrent, accepted attempt (queue wait included)", lat),
        row("concurrent, end to end (refusals and back-off included)", e2e),
        row("sequential replay", seq),
    ]
    if report["rejection_messages"]:
        lines += ["", "Refusal message(s): " + "; ".join(f"`{m}`" for m in report["rejection_messages"])]
    if report["mismatches"]:
        lines += ["", "Mismatches: " + "; ".join(f"user {m['user']} #{m['k']} {m['attack']} on {m['model']}: "
                                                 f"{', '.join(m['fields'])}" for m in report["mismatches"][:20])]
    if report["errors"] or report["replay_errors"]:
        lines += ["", "Errors: " + "; ".join(f"user {u} #{k}: {e}" for u, k, e in
                                             (report["errors"] + report["replay_errors"])[:20])]
    if not report["hwm_reset"]:
        lines += ["", "(VmHWM could not be reset: the peaks are since the server started.)"]
    return "\n".join(lines)


def passed(report: dict) -> bool:
    return (report["completed"] == report["requests"] and not report["errors"] and not report["replay_errors"]
            and not report["mismatches"] and report["compared"] == report["requests"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=20, help="concurrent gradio_client sessions (default 20)")
    parser.add_argument("--attacks", type=int, default=5, help="attacks per session (default 5)")
    parser.add_argument("--quick", action="store_true", help="4 sessions x 2 attacks on 2 models, fewer steps")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated checkpoint names")
    parser.add_argument("--checkpoints", type=Path, default=None, help="SSM_LAB_CHECKPOINTS for the server")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra server environment, e.g. SSM_LAB_MAX_QUEUE_SIZE=4")
    args = parser.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    if args.quick:
        args.clients, args.attacks, models = min(args.clients, 4), min(args.attacks, 2), models[:2]
    server_env = dict(item.split("=", 1) for item in args.server_env)
    command = "python -m benchmarks.load_test " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="ssm-load-") as tmp:
        tempfile.tempdir = tmp  # gradio_client leaves an empty folder in the temp dir per download: keep them here
        with live_server(Path(tmp) / "server", args.checkpoints, **server_env) as server:
            print(f"server answered after {server.start_seconds:.1f} s (pid {server.pid})", file=sys.stderr)
            report = run(server, args.clients, args.attacks, models, args.quick, Path(tmp) / "client")
    print(markdown(report, command.strip(), server_env))
    return 0 if passed(report) else 1


if __name__ == "__main__":
    raise SystemExit(main())
