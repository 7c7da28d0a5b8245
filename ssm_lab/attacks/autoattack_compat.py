"""Every reliance on pyautoattack's internals in one place, checked against the version it was written for."""
from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import threading
import warnings

from ..release_fence import untested_release_message
from ._runtime import RunContext

# The log capture, the check counter reset and the cost model in autoattack.py were read off this release line
TESTED_PYAUTOATTACK = "0.2"
LOGGER = logging.getLogger("auto-attack")  # the logger pyautoattack's AutoAttack and its checks write to
_LOG_LOCK = threading.Lock()
_LOG_USERS = {"count": 0, "level": logging.NOTSET}


class UntestedAutoAttackWarning(UserWarning):
    """pyautoattack is not the release line the work-arounds here were written for."""


def untested_version_message(version: str) -> str | None:
    """None on the tested release line, else what to check; `version` is a pyautoattack version string."""
    return untested_release_message("pyautoattack", version, TESTED_PYAUTOATTACK,
                                    "ssm_lab/attacks/autoattack_compat.py",
                                    "its log messages, its checks.funcs counter and the cost model in autoattack.py")


def warn_if_untested() -> None:
    message = untested_version_message(importlib.metadata.version("pyautoattack"))
    if message:
        warnings.warn(message, UntestedAutoAttackWarning, stacklevel=2)


def reset_dynamic_check_counter() -> None:
    """Zero pyautoattack's call counter for its dynamic-defence check before each sub-attack.

    `pyautoattack.checks.funcs` counts gradient calls seen by a trace function; it is process-global and never
    reset, so without this every run after the first reports a dynamic defence for a model that has none."""
    from pyautoattack import checks

    counter = getattr(checks, "funcs", None)
    if not isinstance(counter, dict):
        raise RuntimeError(f"pyautoattack {importlib.metadata.version('pyautoattack')} has no checks.funcs counter; "
                           f"ssm_lab/attacks/autoattack_compat.py was written for {TESTED_PYAUTOATTACK}.x and must "
                           f"be revisited")
    for key in counter:
        counter[key] = 0


class _LogCapture(logging.Handler):
    """pyautoattack reports its gradient-masking checks as log warnings: turn them into result flags."""

    def __init__(self, ctx: RunContext):
        super().__init__(logging.DEBUG)
        self.ctx = ctx
        self.thread = threading.get_ident()  # concurrent runs (e.g. Gradio workers) share the logger
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        message = record.getMessage()
        self.lines.append(message)
        if record.levelno >= logging.WARNING:
            self.ctx.flag(f"AutoAttack check: {message}")


@contextlib.contextmanager
def captured_logs(ctx: RunContext):
    """Attach a capturing handler; the logger stays at DEBUG while any run is active, then gets its level back."""
    handler = _LogCapture(ctx)
    with _LOG_LOCK:
        if _LOG_USERS["count"] == 0:
            _LOG_USERS["level"] = LOGGER.level
            LOGGER.setLevel(logging.DEBUG)
        _LOG_USERS["count"] += 1
        LOGGER.addHandler(handler)
    try:
        yield handler
    finally:
        with _LOG_LOCK:
            LOGGER.removeHandler(handler)
            _LOG_USERS["count"] -= 1
            if _LOG_USERS["count"] == 0:
                LOGGER.setLevel(_LOG_USERS["level"])
