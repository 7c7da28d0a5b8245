"""A `python -m app` subprocess: wait until it serves HTTP, stop it; shared by the benchmarks and the server tests."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120  # generous: CI machines are shared; the measured start time is printed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, url: str, timeout_s: float, log_path: Path | None = None,
                       interval_s: float = 0.2) -> float:
    """Poll `url` until it answers 200; seconds waited. RuntimeError (with the log's tail) if the app dies or stalls."""
    started = time.perf_counter()
    tail = (lambda: "\n" + log_path.read_text(errors="replace")[-3000:]) if log_path else (lambda: "")
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}:{tail()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return time.perf_counter() - started
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"the app did not answer within {timeout_s} s:{tail()}")
        time.sleep(interval_s)


def stop(proc: subprocess.Popen) -> None:
    """Terminate, then kill if it has not exited within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serving_app(env: dict[str, str], log_path: Path, timeout_s: float = START_TIMEOUT_S):
    """`python -m app --port <free>` with exactly `env`; yields (url, pid, seconds until the first HTTP 200)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_until_serving(proc, url, timeout_s, log_path)
            yield url, proc.pid, time.perf_counter() - started
        finally:
            stop(proc)


@contextlib.contextmanager
def running_app(checkpoints: Path, log_path: Path, **env_extra):
    """The app with its own checkpoints, offline; yields (url, seconds until the first HTTP 200)."""
    env = {**os.environ, "SSM_LAB_CHECKPOINTS": str(checkpoints), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", **env_extra}
    env.pop("SSM_LAB_HOST", None)
    env.pop("SSM_LAB_PORT", None)
    with serving_app(env, log_path) as (url, _, seconds):
        yield url, seconds
