"""Start `ssm-lab` commands as child processes and SIGKILL them at a chosen moment: a time, or inside a file write."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .kill_files import is_temporary

ROOT = Path(__file__).resolve().parents[1]
MODES = ("random", "write")  # kill at a random time, or while a file is being written
WRITE_PAUSE_S = 0.2
# A slow disk: every fsync of the child sleeps first, so a checkpoint write lasts long enough to be killed inside it
# (after its temporary file holds the data, before the rename). Nothing else in the child changes.
SLOW_FSYNC = ("import os, time\n"
              "_fsync = os.fsync\n"
              f"os.fsync = lambda fd: (time.sleep({WRITE_PAUSE_S}), _fsync(fd))[1]\n")
CLI = "import sys\nsys.argv[0] = 'ssm-lab'\nfrom ssm_lab.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"


def child_env(**extra: str) -> dict[str, str]:
    """Our tree first on the path, one thread, the developer data folder if one is set."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def cli_command(args: list[str], slow_writes: bool = False) -> list[str]:
    return python_command(CLI, args, slow_writes)


def python_command(code: str, args: list[str], slow_writes: bool = False) -> list[str]:
    return [sys.executable, "-c", (SLOW_FSYNC if slow_writes else "") + code, *args]


@dataclass
class Outcome:
    """How one started process ended."""

    killed: bool
    returncode: int
    seconds: float
    in_write: bool = False  # a temporary file was present when the kill landed
    stderr: str = ""
    stdout: str = ""


def run(command: list[str], env: dict, timeout: float = 1800) -> Outcome:
    t0 = time.time()
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return Outcome(False, proc.returncode, time.time() - t0, stderr=proc.stderr[-2000:], stdout=proc.stdout[-2000:])


def run_and_kill(command: list[str], env: dict, *, after_s: float | None = None, when=None, within_s: float = 0.0,
                 rng: random.Random | None = None, timeout: float = 1800) -> Outcome:
    """Start `command`; SIGKILL it `after_s` seconds in, or (with `when`, a predicate polled every 2 ms) a random
    moment within `within_s` seconds after `when()` first holds. A process that ends first is not killed."""
    t0 = time.time()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if when is None:
            try:
                proc.wait(timeout=after_s)
            except subprocess.TimeoutExpired:
                pass
        else:
            while proc.poll() is None and time.time() - t0 < timeout:
                if when():
                    time.sleep((rng or random).uniform(0, within_s))
                    break
                time.sleep(0.002)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        in_write = killed and when is not None and when()
        stderr = proc.stderr.read()[-2000:] if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    return Outcome(killed, proc.returncode, time.time() - t0, in_write, stderr)


def writing(folders: list[Path]):
    """A predicate: does one of `folders` hold a temporary file of an atomic write in progress?"""
    def check() -> bool:
        for folder in folders:
            try:
                if any(is_temporary(Path(entry.path)) for entry in os.scandir(folder)):
                    return True
            except FileNotFoundError:
                continue
        return False

    return check


def kill_in_write(command_for, env: dict, folders: list[Path], rng: random.Random) -> Outcome:
    """Run the slowed-writes command and kill it inside its first atomic write into `folders`."""
    return run_and_kill(command_for(True), env, when=writing(folders), within_s=WRITE_PAUSE_S / 2, rng=rng)
