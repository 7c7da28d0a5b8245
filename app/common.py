"""Plumbing shared by every handler: readable errors, per-session cancel events, model locks, progress, run folders."""
from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import threading
import time
from pathlib import Path

from ssm_models.errors import UserError

from .gradio_compat import sweep_upload_folder
from .limits import LIMITS, LimitError, cleanup_period

RUNS_DIR = Path(tempfile.gettempdir()) / "ssm-lab-runs"
RUN_MAX_AGE_S = LIMITS.file_age
_CANCELS: dict[str, threading.Event] = {}
_CANCELS_LOCK = threading.Lock()


def user_errors(fn):
    """Turn the engine's and our own input errors into gr.Error, which the page shows as a readable message.

    Anything else (a bug) propagates unchanged, so it is logged with its traceback and not dressed up."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - filtered just below
            if not is_user_error(exc):
                raise
            import gradio as gr

            if isinstance(exc, gr.Error):
                raise
            title = type(exc).__name__.replace("Error", " error").strip()
            raise gr.Error(str(exc), title=title, print_exception=not is_expected(exc)) from exc

    return wrapper


def is_user_error(exc: Exception) -> bool:
    """Input the user can fix: our UserErrors, and the engine's checks that still raise a built-in ValueError or
    FileNotFoundError (bad values, unknown or unreachable checkpoints)."""
    return isinstance(exc, (UserError, ValueError, FileNotFoundError)) and not isinstance(exc, UnicodeError)


def public_model_info(info: dict, name: str) -> dict:
    """A model's provenance without the server's directories (and without a `path` key, which API clients
    would take for a file to download)."""
    out = {k: v for k, v in info.items() if k != "path"}
    if str(out.get("source", "")).startswith("/"):
        out["source"] = name
    return out


def is_expected(exc: Exception) -> bool:
    """The errors the engine and the app raise on purpose for bad input: no traceback needed in the log."""
    return isinstance(exc, UserError)


def session_key(request) -> str:
    """gradio's per-browser-tab (or per-Client) session id; plain calls share one key."""
    return getattr(request, "session_hash", None) or "local"


def arm_cancel(kind: str = "attack", request=None) -> None:
    """Register a fresh cancel event before a queued job starts, so Cancel also stops a job still waiting."""
    with _CANCELS_LOCK:
        _CANCELS[f"{session_key(request)}:{kind}"] = threading.Event()


@contextlib.contextmanager
def cancellable(kind: str, request=None):
    """The session's cancel event for this kind of job (armed earlier or new), removed when the job ends."""
    key = f"{session_key(request)}:{kind}"
    with _CANCELS_LOCK:
        event = _CANCELS.setdefault(key, threading.Event())
    try:
        if event.is_set():
            raise LimitError("cancelled before it started")
        yield event
    finally:
        with _CANCELS_LOCK:
            if _CANCELS.get(key) is event:
                del _CANCELS[key]


def cancel_job(kind: str = "attack", request=None) -> str:
    """Ask this session's running (or queued) job of this kind to stop; attacks return their best point so far."""
    with _CANCELS_LOCK:
        event = _CANCELS.get(f"{session_key(request)}:{kind}")
    if event is None:
        return "Nothing to cancel: no job of this kind is running for this session."
    event.set()
    return "Cancelling: the job stops at its next model call and returns what it has."


@contextlib.contextmanager
def holding(models):
    """Exclusive use of each model (attacks switch it to eval/frozen mode), taken in one fixed order so two
    requests with overlapping model sets cannot deadlock."""
    locks = [lock for _, lock in sorted({id(m): m.use_lock for m in models}.items())]
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield


def progress_callback(progress):
    """The engine's progress(done, total, message) -> gradio's gr.Progress((done, total), desc=...)."""

    def report(done: int, total: int, message: str) -> None:
        if progress is not None:
            progress((min(int(done), int(total)), max(int(total), 1)), desc=message)

    return report


def new_run_dir() -> Path:
    """A fresh directory for one run's downloads; runs older than a few hours are pruned on the way."""
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in RUNS_DIR.iterdir():
        try:
            if now - old.stat().st_mtime > RUN_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    sweep_upload_folder(now, RUN_MAX_AGE_S, cleanup_period(RUN_MAX_AGE_S))
    return Path(tempfile.mkdtemp(prefix="run-", dir=RUNS_DIR))
