"""Soak test: many sequential requests of every kind against one live app; memory, fds and temp files must level off."""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load_test import (
    DEFAULT_MODELS,
    SMALLEST_TEST_SET,
    Server,
    client_for,
    live_server,
    make_request,
    process_tree,
    status_mib,
)

WARM_UP = 50  # requests before the reference sample: imports, model loads, caches and allocator pools fill up
SAMPLE_EVERY = 10
RSS_GROWTH_LIMIT = 0.10
FILE_AGE_S = 60  # the soak's SSM_LAB_MAX_FILE_AGE: short, so the server's clean-up runs many times during the soak
# request kind -> weight; every endpoint a user reaches, errors included (their paths must not leak either)
KINDS = {"attack": 30, "upload_attack": 6, "preview": 12, "select_model": 8, "cost": 10, "evaluate": 5,
         "eps_curves": 3, "compare": 5, "transfer": 3, "random_image": 4, "first_of_class": 2, "startup": 3,
         "bad_request": 6, "hub_offline": 3}


@dataclass
class Sample:
    request: int
    rss_mib: float
    fds: int
    threads: int
    temp_files: int
    temp_dirs: int
    temp_mib: float
    stale_files: int = 0  # files and folders last touched before a given moment (see `run`)
    stale_dirs: int = 0


def _proc_entries(pid: int, folder: str) -> int:
    """Entries of /proc/<p>/<folder> summed over the process tree (fd: open files, task: threads)."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/{folder}"))
    return total


def open_fds(pid: int) -> int:
    return _proc_entries(pid, "fd")


def thread_count(pid: int) -> int:
    return _proc_entries(pid, "task")


def temp_usage(server: Server, before: float = 0.0) -> tuple[int, int, float, int, int]:
    """Files, directories and MiB under the server's private temp dirs (gradio's cache and TMPDIR), and how many
    files and directories were last changed before `before` (a time.time())."""
    files = dirs = size = stale_files = stale_dirs = 0
    for root in server.temp_dirs:
        for base, subdirs, names in os.walk(root):
            for name, is_dir in [(d, True) for d in subdirs] + [(n, False) for n in names]:
                dirs, files = dirs + is_dir, files + (not is_dir)
                # torch makes one empty compile-cache folder (torchinductor_<user>) in TMPDIR when it is imported
                once = is_dir and base == str(root) and name.startswith("torchinductor_")
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(base, name))
                    size += 0 if is_dir else st.st_size
                    if max(st.st_mtime, st.st_ctime) < before and not once:
                        stale_dirs, stale_files = stale_dirs + is_dir, stale_files + (not is_dir)
    return files, dirs, size / 2**20, stale_files, stale_dirs


def sample(server: Server, i: int, before: float = 0.0) -> Sample:
    files, dirs, mib, stale_files, stale_dirs = temp_usage(server, before)
    return Sample(i, status_mib(server.pid, "VmRSS"), open_fds(server.pid), thread_count(server.pid), files, dirs, mib,
                  stale_files, stale_dirs)


def upload_file(folder: Path, rng: random.Random) -> str:
    """A photographed digit of random size and look, as a JPEG or a PNG, as a user would upload it (an MNIST
    model frames it as a digit; a CIFAR-10 model squashes it)."""
    import io

    import numpy as np
    from PIL import Image

    from testkit.photo_digits import mnist_test_digits, photograph

    digits = mnist_test_digits()[0]
    jpeg = photograph(digits[rng.randrange(len(digits))], np.random.default_rng(rng.randrange(2**32)))
    suffix = rng.choice(("png", "jpg"))
    path = folder / f"upload-{rng.randrange(10**9)}.{suffix}"
    if suffix == "png":
        Image.open(io.BytesIO(jpeg)).save(path)
    else:
        path.write_bytes(jpeg)
    return str(path)


def request(i: int, models: tuple[str, ...], folder: Path) -> tuple[str, dict, str]:
    """The i-th request (from 1): (kind, keyword arguments, api_name); fixed per i, so runs send the same ones."""
    rng = random.Random(i)
    # every kind once first (within the warm-up, so each path has run before the reference sample), then weighted
    kind = list(KINDS)[i - 1] if i <= len(KINDS) else rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    model = rng.choice(models)
    attack = make_request(i, 0, models, quick=True)
    pair = rng.sample(models, min(2, len(models)))
    common = dict(dataset="MNIST", steps=rng.choice((2, 5)), restarts=1, seed=rng.randrange(1000))
    if kind == "attack":
        return kind, attack, "/attack"
    if kind == "upload_attack":
        from gradio_client import handle_file

        return kind, {**attack, "source": "upload", "upload": handle_file(upload_file(folder, rng))}, "/attack"
    if kind == "preview":
        return kind, dict(model=model, source="dataset", dataset="MNIST", index=rng.randrange(SMALLEST_TEST_SET),
                          upload=None, sketch=None), "/preview"
    if kind == "select_model":
        return kind, dict(model=model, current_dataset="MNIST"), "/select_model"
    if kind == "cost":
        return kind, {k: attack[k] for k in ("model", "attack", "eps", "steps", "step_size", "restarts", "target",
                                              "seed")}, "/cost"
    if kind == "evaluate":
        return kind, dict(model=model, n=rng.choice((4, 8)), attacks=["FGSM", "PGD (Linf)"], eps="0.1",
                          **common), "/evaluate"
    if kind == "eps_curves":
        return kind, dict(models=pair, n=4, attack="PGD (Linf)", eps_values="0, 0.1, 0.2", **common), "/eps_curves"
    if kind == "compare":
        return kind, {**{k: v for k, v in attack.items() if k != "model"}, "models": pair}, "/compare"
    if kind == "transfer":
        return kind, dict(models=pair, n=4, attack="FGSM", eps="0.1", **common), "/transfer"
    if kind in ("random_image", "first_of_class"):
        return kind, dict(dataset="MNIST", class_name=rng.choice(("any", "3", "7"))), f"/{kind}"
    if kind == "startup":
        return kind, {}, "/startup"
    if kind == "bad_request":
        bad = rng.choice((dict(eps="nan"), dict(steps=10**6), dict(model="/etc"), dict(index=10**7),
                          dict(attack="FAB-T", target="2")))
        return kind, {**attack, **bad}, "/attack"
    return kind, dict(repo_id=f"nobody/model-{rng.randrange(100)}", revision=""), "/load_hub_model"


def run(server: Server, count: int, models: tuple[str, ...], client_dir: Path, idle_s: float,
        warm_up: int = WARM_UP) -> dict:
    """`count` requests one after another, sampling every SAMPLE_EVERY; then idle past the file age and clean up."""
    client = client_for(server, client_dir / "downloads")
    folder = client_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    client.predict(api_name="/startup")  # as the page does on load
    samples = [sample(server, 0)]
    kinds: dict[str, list[int]] = {}  # kind -> [sent, failed as expected, failed unexpectedly]
    unexpected, seconds = [], []
    started = time.perf_counter()
    for i in range(1, count + 1):
        kind, kwargs, api = request(i, models, folder)
        counts = kinds.setdefault(kind, [0, 0, 0])
        counts[0] += 1
        t0 = time.perf_counter()
        try:
            client.predict(**kwargs, api_name=api)
            if kind in ("bad_request", "hub_offline"):
                unexpected.append((i, kind, "accepted a request that must be refused"))
                counts[2] += 1
        except Exception as exc:  # noqa: BLE001 - refusals are expected for two kinds, anything else is recorded
            if kind in ("bad_request", "hub_offline"):
                counts[1] += 1
            else:
                counts[2] += 1
                unexpected.append((i, kind, f"{type(exc).__name__}: {exc}"[:300]))
        seconds.append(time.perf_counter() - t0)
        if i % SAMPLE_EVERY == 0 or i == count:
            samples.append(sample(server, i))
            shutil.rmtree(client_dir / "downloads", ignore_errors=True)  # the client's copies, not the server's
            for leftover in folder.iterdir():
                leftover.unlink()
    wall = time.perf_counter() - started
    time.sleep(idle_s)  # past the file age and one clean-up period
    # one more attack: run folders are pruned when a new one is made. Then nothing older than it may be left.
    last_start = time.time()
    client.predict(**make_request(count + 1, 0, models, quick=True), api_name="/attack")
    after_idle = sample(server, count + 1, before=last_start)
    return {"count": count, "warm_up": warm_up, "models": models, "samples": samples, "after_idle": after_idle,
            "kinds": kinds, "unexpected": unexpected, "wall": wall, "seconds": seconds, "idle_s": idle_s}


def growth(report: dict) -> dict:
    """Each measure at the end relative to the sample closest to the end of the warm-up."""
    samples = report["samples"]
    ref = min(samples, key=lambda s: abs(s.request - min(report["warm_up"], report["count"])))
    end = samples[-1]
    post = [s for s in samples if s.request >= ref.request]
    return {"ref": ref, "end": end, "rss": (end.rss_mib - ref.rss_mib) / ref.rss_mib,
            "rss_max": max(s.rss_mib for s in post), "fds": end.fds - ref.fds, "fds_max": max(s.fds for s in post),
            "threads": end.threads - ref.threads, "temp_files_max": max(s.temp_files for s in post),
            "temp_mib_max": max(s.temp_mib for s in post)}


def passed(report: dict, rss_limit: float = RSS_GROWTH_LIMIT, fd_slack: int = 4) -> bool:
    g = growth(report)
    idle, ref = report["after_idle"], g["ref"]
    return (not report["unexpected"] and g["rss"] < rss_limit and g["fds"] <= fd_slack
            and idle.fds <= ref.fds + fd_slack and idle.stale_files == 0 and idle.stale_dirs == 0)


def markdown(report: dict, command: str, server_env: dict) -> str:
    g = growth(report)
    ref, end, idle = g["ref"], g["end"], report["after_idle"]
    settings = ", ".join(f"{k}={v}" for k, v in server_env.items()) or "defaults"
    mix = ", ".join(f"{k} {v[0]}" for k, v in sorted(report["kinds"].items(), key=lambda kv: -kv[1][0]))
    refused = sum(v[1] for v in report["kinds"].values())
    seconds = sorted(report["seconds"])
    lines = [
        f"`{command}`: {report['count']} sequential requests through one gradio_client session on "
        f"{len(report['models'])} models ({', '.join(report['models'])}); server settings: {settings}. "
        f"{report['wall']:.0f} s (median request {seconds[len(seconds) // 2]:.2f} s, slowest {seconds[-1]:.1f} s).",
        f"Requests by kind: {mix}. Refused as they should be: {refused}; unexpected failures: "
        f"{len(report['unexpected'])}.",
        "",
        f"| server | after request 0 | after warm-up (request {ref.request}) | end (request {end.request}) | "
        f"growth after warm-up | after {report['idle_s']:.0f} s idle + 1 attack |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    first = report["samples"][0]
    for name, attr, unit in (("RSS", "rss_mib", "MiB"), ("open file descriptors", "fds", ""),
                             ("threads", "threads", ""), ("temp files", "temp_files", ""),
                             ("temp directories", "temp_dirs", ""), ("temp MiB", "temp_mib", "")):
        a, b, c, d = (getattr(s, attr) for s in (first, ref, end, idle))
        fmt = (lambda v: f"{v:.0f} {unit}".strip()) if isinstance(a, float) else (lambda v: str(v))
        change = f"{(c - b) / b:+.1%}" if attr == "rss_mib" else f"{c - b:+.1f}" if isinstance(a, float) else \
            f"{c - b:+d}"
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {fmt(c)} | {change} | {fmt(d)} |")
    lines += ["", f"Largest after warm-up: RSS {g['rss_max']:.0f} MiB, {g['fds_max']} fds, "
                  f"{g['temp_files_max']} temp files ({g['temp_mib_max']:.1f} MiB). After the idle period and one "
                  f"more attack, files and folders left from before that attack: {idle.stale_files} and "
                  f"{idle.stale_dirs}."]
    series = ", ".join(f"{s.request}: {s.rss_mib:.0f}" for s in report["samples"][::max(1, len(report['samples'])
                                                                                        // 12)])
    lines.append(f"RSS (MiB) by request: {series}.")
    if report["unexpected"]:
        lines += ["", "Unexpected: " + "; ".join(f"#{i} {k}: {e}" for i, k, e in report["unexpected"][:10])]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="60 requests on 2 models")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated checkpoint names")
    parser.add_argument("--checkpoints", type=Path, default=None, help="SSM_LAB_CHECKPOINTS for the server")
    parser.add_argument("--file-age", type=int, default=FILE_AGE_S, help="the server's SSM_LAB_MAX_FILE_AGE (s)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    if args.quick:
        args.requests, models = min(args.requests, 60), models[:2]
    server_env = {"SSM_LAB_MAX_FILE_AGE": str(args.file_age), **dict(e.split("=", 1) for e in args.server_env)}
    idle = idle_seconds(args.file_age)
    command = "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="ssm-soak-") as tmp:
        tempfile.tempdir = tmp  # gradio_client leaves an empty folder in the temp dir per download: keep them here
        with live_server(Path(tmp) / "server", args.checkpoints, **server_env) as server:
            print(f"server answered after {server.start_seconds:.1f} s (pid {server.pid})", file=sys.stderr)
            report = run(server, args.requests, models, Path(tmp) / "client", idle)
    print(markdown(report, command.strip(), server_env))
    return 0 if passed(report) else 1


def idle_seconds(file_age: int) -> float:
    """Long enough for every file to expire and be deleted (age + one period), then for its emptied folder to
    expire and be swept (the same again)."""
    from app.limits import cleanup_period

    return 2 * (file_age + cleanup_period(file_age)) + 2


if __name__ == "__main__":
    raise SystemExit(main())
