"""Every user-facing error is a UserError (keeping its built-in base), and the front ends show it as such."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.common import is_expected, is_user_error
from app.limits import LimitError
from ssm_lab.attacks import AttackParamError
from ssm_lab.cli import CLIError, main
from ssm_lab.datasets.base import CorruptDataError, DataError, DatasetNotFoundError
from ssm_lab.images import ImageInputError
from ssm_models.atomic import DiskFullError
from ssm_models.config import ConfigError
from ssm_models.errors import UserError
from ssm_models.reference import ReferenceImportError
from ssm_models.safe_files import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_BASE = {CLIError: Exception, ImageInputError: ValueError, DataError: RuntimeError,
                DatasetNotFoundError: FileNotFoundError, CorruptDataError: RuntimeError,
                AttackParamError: ValueError, ReferenceImportError: ValueError, ConfigError: ValueError,
                CheckpointError: ValueError, LimitError: ValueError, DiskFullError: OSError}


@pytest.mark.parametrize("error", list(BUILTIN_BASE), ids=lambda e: e.__name__)
def test_each_user_facing_error_is_a_user_error(error):
    assert issubclass(error, UserError)


@pytest.mark.parametrize("error", list(BUILTIN_BASE), ids=lambda e: e.__name__)
def test_each_user_facing_error_keeps_its_built_in_base(error):
    assert issubclass(error, BUILTIN_BASE[error])


def test_the_app_shows_a_user_error_without_a_traceback_and_a_plain_bug_not_at_all():
    class SomeNewUserError(UserError):
        pass

    assert is_user_error(SomeNewUserError("x"))
    assert is_expected(SomeNewUserError("x"))
    assert not is_user_error(ZeroDivisionError("bug"))


def test_the_cli_reports_any_user_error_with_exit_code_2(monkeypatch, capsys):
    import ssm_lab.cli as cli

    class SomeNewUserError(UserError):
        pass

    def fail(args):
        raise SomeNewUserError("the reason, in words")

    monkeypatch.setattr(cli, "cmd_list", fail)
    assert main(["list"]) == 2
    assert "ssm-lab list: error: the reason, in words" in capsys.readouterr().err


@pytest.mark.e2e
def test_the_error_base_loads_no_torch_for_the_torch_free_front_ends():
    code = "import sys, ssm_models.errors, ssm_lab.cli, app.limits; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
