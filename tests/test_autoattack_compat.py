"""The pyautoattack work-arounds: fenced to the tested release line, the global check counter, the log capture."""
from __future__ import annotations

import importlib.metadata
import logging
import threading
from types import SimpleNamespace

import pytest
from pyautoattack import checks

from ssm_lab.attacks import autoattack_compat as compat


def test_the_installed_pyautoattack_is_the_release_line_the_work_arounds_were_written_for():
    assert compat.untested_version_message(importlib.metadata.version("pyautoattack")) is None


def test_another_version_gets_a_message_naming_both_versions():
    message = compat.untested_version_message("0.3.0")
    assert message is not None
    assert "pyautoattack 0.3.0" in message, message
    assert f"{compat.TESTED_PYAUTOATTACK}.x" in message, message


def test_an_untested_version_warns(monkeypatch):
    monkeypatch.setattr(compat.importlib.metadata, "version", lambda name: "1.0.0")
    with pytest.warns(compat.UntestedAutoAttackWarning, match="pyautoattack 1.0.0"):
        compat.warn_if_untested()


def test_the_dynamic_check_counter_is_zeroed(monkeypatch):
    monkeypatch.setattr(checks, "funcs", {"grad": 3, "backward": 1})
    compat.reset_dynamic_check_counter()
    assert checks.funcs == {"grad": 0, "backward": 0}


def test_a_missing_check_counter_is_refused_with_a_clear_message(monkeypatch):
    monkeypatch.delattr(checks, "funcs")
    with pytest.raises(RuntimeError, match=r"no checks.funcs counter.*revisited"):
        compat.reset_dynamic_check_counter()


def test_warnings_of_this_thread_become_flags_and_the_logger_level_comes_back():
    flags = []
    ctx = SimpleNamespace(flag=flags.append)
    level = compat.LOGGER.level
    with compat.captured_logs(ctx) as capture:
        assert compat.LOGGER.level == logging.DEBUG
        compat.LOGGER.debug("initial accuracy: 50%")
        compat.LOGGER.warning("it seems that the output is a probability distribution")
        other = threading.Thread(target=compat.LOGGER.warning, args=("from another run",))
        other.start()
        other.join()
    assert flags == ["AutoAttack check: it seems that the output is a probability distribution"]
    assert capture.lines == ["initial accuracy: 50%", "it seems that the output is a probability distribution"]
    assert compat.LOGGER.level == level
