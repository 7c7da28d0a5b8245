"""Disk full: training, evaluation, a Hub download and an import on a small tmpfs that fills up mid-run."""
from __future__ import annotations

import contextlib
import errno
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from testkit.hub_server import HubServer

from .hub_faults import cache_problems
from .kill_files import file_differences, folder_problems, report_differences
from .kill_runs import child_env, run

SIZE = "8m"


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = SIZE):
    """A size-limited tmpfs mounted at `where` (root only); yields None, with the reason, where it cannot mount."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        yield None, f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'})"
        return
    try:
        yield where, ""
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(filesystem: Path) -> Path:
    """Take every free byte with one file; returns it, to delete when space is to be freed."""
    filler = filesystem / "filler"
    block = b"\0" * 65536
    with open(filler, "ab") as stream:
        while True:
            try:
                stream.write(block)
                stream.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler


def fill_when(path: Path, filesystem: Path, proc: subprocess.Popen, timeout: float = 600) -> bool:
    """Fill the filesystem as soon as `path` exists (the run has written a complete first state)."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if path.exists():
            fill(filesystem)
            return True
        time.sleep(0.01)
    return False


def full_mid_run(name: str, command: list[str], first_state: Path, fs: Path, check_output, log) -> dict:
    """Run `command` (slowed writes) and fill the disk once `first_state` exists; then free it and run again."""
    env = child_env()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    hit = fill_when(first_state, fs, proc)
    _, stderr = proc.communicate()
    message = error_line(stderr)
    problems = check_output()
    (fs / "filler").unlink(missing_ok=True)
    resumed = run(command, env)
    row = {"what": name, "filled_mid_run": hit, "rc": proc.returncode, "message": message,
           "names_path": str(fs) in message and "no space left" in message, "intact": not problems,
           "problems": problems, "resumed_rc": resumed.returncode}
    log(f"disk full, {name}: {row}")
    return row


def disk_full_trials(work: Path, log) -> list[dict]:
    from .kill_resume import eval_command, train_command

    rows = []
    with small_filesystem(work / "small-fs") as (fs, reason):
        if fs is None:
            log(f"disk full trials skipped: {reason}")
            return [{"what": "all", "skipped": reason}]
        baseline = work / "baseline-st"
        if not baseline.exists():
            run(train_command("st", baseline), child_env())
        out = fs / "train"
        row = full_mid_run("training", train_command("st", out, slow_writes=True), out / "train_state.pt", fs,
                           lambda: folder_problems(out)[0], log)
        row["equal_after_resume"] = not file_differences(baseline, out) if row["resumed_rc"] == 0 else False
        rows.append(row)
        for path in fs.iterdir():
            _remove(path)

        base_report = work / "disk-eval-baseline.json"
        run(eval_command(baseline, work / "disk-eval-state.json", base_report, 50), child_env())
        state, report = fs / "state.json", fs / "report.json"
        row = full_mid_run("evaluation", eval_command(baseline, state, report, 50, slow_writes=True), state, fs,
                           lambda: folder_problems(fs)[0] + (["report written"] if report.exists() else []), log)
        row["equal_after_resume"] = (row["resumed_rc"] == 0 and not report_differences(
            _json(base_report), _json(report)))
        rows.append(row)
        for path in fs.iterdir():
            _remove(path)
        rows.append(download_on_full_disk(work, fs, log))
    return rows


def download_on_full_disk(work: Path, fs: Path, log) -> dict:
    """A Hub download into a cache on a full filesystem: a clear error, nothing unverified left, then it works."""
    import torch

    from ssm_models import create_model
    from ssm_models.hub import save_pretrained

    from .kill_fetch import BIG, LOAD, REPO, hub_env

    torch.manual_seed(0)
    root = work / "disk-hub-root"
    save_pretrained(create_model("s4", **BIG), root / REPO)
    with HubServer(root) as hub:
        env = hub_env(fs / "hf", hub.url)
        (fs / "hf" / "hub").mkdir(parents=True, exist_ok=True)
        fill(fs)
        first = run([sys.executable, "-c", LOAD, REPO], env)
        message = error_line(first.stderr)
        bad = [p for p in cache_problems(fs / "hf" / "hub") if not p.startswith("partial file")]
        (fs / "filler").unlink()
        again = run([sys.executable, "-c", LOAD, REPO], env)
    row = {"what": "Hub download", "filled_mid_run": True, "rc": first.returncode, "message": message,
           "names_path": str(fs) in message and "space" in message, "intact": not bad, "problems": bad,
           "resumed_rc": again.returncode, "equal_after_resume": again.returncode == 0
           and not cache_problems(fs / "hf" / "hub")}
    log(f"disk full, download: {row}")
    return row


def error_line(stderr: str) -> str:
    """The line that says what failed (a progress bar may be redrawn after it), else the last line."""
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[-1]


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def disk_passed(row: dict) -> bool:
    if "skipped" in row:
        return True
    return (row["filled_mid_run"] and row["rc"] != 0 and row["names_path"] and row["intact"]
            and row["resumed_rc"] == 0 and row["equal_after_resume"])


def disk_table(rows: list[dict]) -> str:
    if rows and "skipped" in rows[0]:
        return f"disk full: skipped ({rows[0]['skipped']})"
    lines = [f"| run on a {SIZE} tmpfs that fills | failed cleanly | message names the path | previous files intact | "
             "resumed after freeing space | equal to an uninterrupted run | message |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['what']} | {r['rc'] != 0} | {r['names_path']} | {r['intact']} | {r['resumed_rc'] == 0} | "
                     f"{r['equal_after_resume']} | {r['message'][:160]} |")
    return "\n".join(lines)
