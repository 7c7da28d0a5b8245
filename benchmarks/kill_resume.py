"""Kill and resume: `python -m benchmarks.kill_resume [--trials N] [--quick]` SIGKILLs runs, resumes them, compares."""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .kill_files import file_differences, folder_problems, report_differences
from .kill_runs import MODES, child_env, cli_command, kill_in_write, run, run_and_kill

METHODS = ("st", "pgd-at", "trades")
# Tiny S4 on 256 MNIST images: under a second per epoch, so most of a run is start-up, data loading and the writes
TRAIN_ARGS = ["--arch", "s4", "--epochs", "3", "--batch-size", "32", "--attack-steps", "2", "--train-limit", "256",
              "--curve-points", "32", "--val-points", "32", "--d-model", "8", "--n-layers", "1", "--d-state", "4",
              "--tokenizer", "patch", "--patch-size", "7", "--lr", "0.01", "--threads", "1"]
EVAL_N = 200
EVAL_ARGS = ["--attack", "pgd", "--attack", "autoattack", "--eps", "0.05", "--batch-size", "25", "--threads", "1"]


def train_command(method: str, out: Path, slow_writes: bool = False) -> list[str]:
    return cli_command(["train", "--method", method, *TRAIN_ARGS, "--out", str(out)], slow_writes)


def eval_command(checkpoint: Path, state: Path, report: Path, n: int, slow_writes: bool = False) -> list[str]:
    return cli_command(["evaluate", str(checkpoint), *EVAL_ARGS, "--n", str(n), "--state", str(state),
                        "--out", str(report)], slow_writes)


def kill_then_finish(make_command, watch: list[Path], check, kills: int, mode: str, baseline_s: float,
                     rng: random.Random, env: dict) -> dict:
    """Up to `kills` killed runs of the same command (each checked by `check()` -> list of problems), then one that
    runs to the end. Returns counts for the tables."""
    row = {"mode": mode, "kills": 0, "in_write": 0, "finished_early": 0, "unloadable": [], "temporaries": 0}
    for _ in range(kills):
        if mode == "write":
            outcome = kill_in_write(make_command, env, watch, rng)
        else:
            outcome = run_and_kill(make_command(False), env, after_s=rng.uniform(0.5, baseline_s), rng=rng)
        if not outcome.killed:
            row["finished_early"] += 1
            if outcome.returncode != 0:
                row["unloadable"].append(f"run ended with code {outcome.returncode}: {outcome.stderr[-300:]}")
            break
        row["kills"] += 1
        row["in_write"] += outcome.in_write
        problems, temporaries = check()
        row["unloadable"] += problems
        row["temporaries"] += temporaries
    final = run(make_command(False), env)
    row["final_rc"] = final.returncode
    row["final_error"] = final.stderr[-500:] if final.returncode else ""
    return row


def training_trials(work: Path, trials: int, rng: random.Random, log) -> tuple[list[dict], dict]:
    env = child_env()
    baselines, seconds = {}, {}
    for method in METHODS[:trials]:
        baselines[method] = work / f"baseline-{method}"
        outcome = run(train_command(method, baselines[method]), env)
        if outcome.returncode != 0:
            raise RuntimeError(f"uninterrupted {method} training failed: {outcome.stderr}")
        seconds[method] = outcome.seconds
        log(f"baseline {method}: {outcome.seconds:.1f} s")
    rows = []
    for trial in range(trials):
        # every (method, kill moment) pair equally often, with 1 or 2 kills before the run that finishes
        method, mode = METHODS[trial % len(METHODS)], MODES[trial % len(MODES)]
        out = work / f"train-{trial}"
        row = kill_then_finish(lambda slow, m=method, o=out: train_command(m, o, slow), [out, out / "last"],
                               lambda o=out: folder_problems(o), kills=1 + (trial // 2) % 2, mode=mode,
                               baseline_s=seconds[method], rng=rng, env=env)
        row.update(method=method, differences=file_differences(baselines[method], out) if row["final_rc"] == 0
                   else ["final run failed"])
        row["temporaries_after"] = folder_problems(out)[1]
        rows.append(row)
        log(f"train {trial}: {summary(row)}")
        shutil.rmtree(out, ignore_errors=True)
    return rows, baselines


def evaluation_trials(work: Path, checkpoint: Path, trials: int, n: int, rng: random.Random, log) -> list[dict]:
    env = child_env()
    base_dir = work / "eval-baseline"
    outcome = run(eval_command(checkpoint, base_dir / "state.json", base_dir / "report.json", n), env)
    if outcome.returncode != 0:
        raise RuntimeError(f"uninterrupted evaluation failed: {outcome.stderr}")
    log(f"baseline evaluation: {outcome.seconds:.1f} s")
    expected = json.loads((base_dir / "report.json").read_text())
    rows = []
    for trial in range(trials):
        folder = work / f"eval-{trial}"
        state, report = folder / "state.json", folder / "report.json"
        row = kill_then_finish(lambda slow, s=state, r=report: eval_command(checkpoint, s, r, n, slow), [folder],
                               lambda s=state, r=report: eval_leftovers(s, r, expected), kills=1 + (trial // 2) % 2,
                               mode=MODES[trial % len(MODES)], baseline_s=outcome.seconds, rng=rng, env=env)
        actual = json.loads(report.read_text()) if row["final_rc"] == 0 else {}
        row["differences"] = report_differences(expected, actual) if actual else ["final run failed"]
        row["temporaries_after"] = folder_problems(folder)[1]
        row["what"] = f"PGD + AutoAttack, {n} images"
        rows.append(row)
        log(f"evaluate {trial}: {summary(row)}")
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def eval_leftovers(state: Path, report: Path, expected: dict) -> tuple[list[str], int]:
    """A killed evaluation may leave a report only if it is the whole uninterrupted one (a kill after the report was
    written, while the process was exiting), and a state file (if any) that loads and claims only points whose
    results equal the uninterrupted run's."""
    problems, temporaries = folder_problems(state.parent)
    if report.exists() and not problems:
        differs = report_differences(expected, json.loads(report.read_text()))
        if differs:
            problems.append(f"a killed run left a report that differs from the full one in {differs}")
    if state.exists() and not problems:
        problems += overclaims(json.loads(state.read_text()), expected)
    return problems, temporaries


def overclaims(state: dict, expected: dict) -> list[str]:
    by_key = {json.dumps({"name": a["attack"], **a["params"]}, sort_keys=True): a for a in expected["attacks"]}
    problems = []
    for key, done in state["attacks"].items():
        final = by_key[key]["predictions"]
        wrong = [i for i, p in enumerate(done["pred"]) if p is not None and p != final[i]]
        unmeasured = [i for i, (r, p) in enumerate(zip(done["robust"], done["pred"])) if (r is None) != (p is None)]
        if wrong or unmeasured:
            problems.append(f"state claims {len(wrong)} point(s) unlike the full run and {len(unmeasured)} "
                            f"half-recorded for {key}")
    return problems


def lock_trial(work: Path, log) -> dict:
    """Two trainings on one folder at once: the second must refuse at once, naming the folder and the holder."""
    env = child_env()
    out = work / "locked"
    first = subprocess.Popen(train_command("st", out, slow_writes=True), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / ".train.lock").exists() or not (out / ".train.lock").read_text():
        if time.time() > deadline or first.poll() is not None:
            break
        time.sleep(0.05)
    second = run(train_command("st", out), env)
    first.wait()
    row = {"second_rc": second.returncode, "message": second.stderr.strip().splitlines()[-1:] or [""],
           "first_rc": first.returncode, "problems": folder_problems(out)[0]}
    row["refused"] = second.returncode == 2 and "already in use by pid" in row["message"][0]
    log(f"lock: {row}")
    shutil.rmtree(out, ignore_errors=True)
    return row


def summary(row: dict) -> str:
    verdict = "PASS" if passed(row) else "FAIL"
    return (f"{verdict} {row['mode']} kills {row['kills']} (in write {row['in_write']}), unloadable "
            f"{len(row['unloadable'])}{' ' + str(row['unloadable'][:2]) if row['unloadable'] else ''}, final rc "
            f"{row['final_rc']}, differences {row['differences']}")


def passed(row: dict) -> bool:
    return (not row["unloadable"] and row["final_rc"] == 0 and not row["differences"]
            and row["temporaries_after"] == 0)


def table(name: str, rows: list[dict], group: str) -> str:
    lines = [f"| {name} | kill moment | trials | kills | kills inside a write | files that failed to load | "
             "resumed to the end | final equal to uninterrupted | temporaries left after resume |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r.get(group, "-"), r["mode"]) for r in rows})
    for key in keys:
        sel = [r for r in rows if (r.get(group, "-"), r["mode"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {len(sel)} | {sum(r['kills'] for r in sel)} | "
                     f"{sum(r['in_write'] for r in sel) if key[1] == 'write' else 'not checked'} | "
                     f"{sum(len(r['unloadable']) for r in sel)} | "
                     f"{sum(r['final_rc'] == 0 for r in sel)} | {sum(not r['differences'] for r in sel)} | "
                     f"{sum(r['temporaries_after'] for r in sel)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=30, help="trials each of training and evaluation")
    parser.add_argument("--quick", action="store_true", help="a few trials of each (CI): 2 training (ST, PGD-AT), "
                        "2 evaluation on 50 images, 1 of each fetch")
    parser.add_argument("--fetch-trials", type=int, default=5, help="trials of each fetch kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=["train", "evaluate", "fetch", "lock", "disk"])
    parser.add_argument("--work", help="folder for the runs (default: a temporary one, removed at the end)")
    parser.add_argument("--json", help="also write every row as JSON here")
    args = parser.parse_args(argv)
    train_n, eval_n, fetch_n = (2, 2, 1) if args.quick else (args.trials, args.trials, args.fetch_trials)
    images = 50 if args.quick else EVAL_N
    parts = set(args.only or ["train", "evaluate", "fetch", "lock", "disk"])
    rng = random.Random(args.seed)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    work = Path(args.work or tempfile.mkdtemp(prefix="kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    try:
        t0 = time.time()
        baselines = {}
        if "train" in parts:
            results["train"], baselines = training_trials(work, train_n, rng, log)
        if "evaluate" in parts:
            checkpoint = baselines.get("st") or _trained_checkpoint(work)
            results["evaluate"] = evaluation_trials(work, checkpoint, eval_n, images, rng, log)
        if "fetch" in parts:
            from .kill_fetch import fetch_trials
            results["fetch"] = fetch_trials(work, fetch_n, rng, log)
        if "lock" in parts:
            results["lock"] = lock_trial(work, log)
        if "disk" in parts:
            from .disk_full import disk_full_trials
            results["disk"] = disk_full_trials(work, log)
        results["seconds"] = round(time.time() - t0, 1)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0 if all_passed(results) else 1


def _trained_checkpoint(work: Path) -> Path:
    out = work / "baseline-st"
    outcome = run(train_command("st", out), child_env())
    if outcome.returncode != 0:
        raise RuntimeError(f"training the evaluation checkpoint failed: {outcome.stderr}")
    return out


def render(results: dict) -> str:
    from .disk_full import disk_table
    from .kill_fetch import fetch_table

    parts = []
    if "train" in results:
        parts.append(table("method", results["train"], "method"))
    if "evaluate" in results:
        parts.append(table("evaluation", results["evaluate"], "what"))
    if "fetch" in results:
        parts.append(fetch_table(results["fetch"]))
    if "lock" in results:
        lock = results["lock"]
        parts.append(f"lock: second writer refused {lock['refused']}; its message: {lock['message'][0]}")
    if "disk" in results:
        parts.append(disk_table(results["disk"]))
    parts.append(f"total {results.get('seconds', 0)} s; all passed: {all_passed(results)}")
    return "\n\n".join(parts)


def all_passed(results: dict) -> bool:
    from .disk_full import disk_passed
    from .kill_fetch import fetch_passed

    return (all(passed(r) for r in results.get("train", []) + results.get("evaluate", []))
            and all(fetch_passed(r) for r in results.get("fetch", []))
            and results.get("lock", {"refused": True})["refused"]
            and all(disk_passed(r) for r in results.get("disk", [])))


if __name__ == "__main__":
    raise SystemExit(main())
