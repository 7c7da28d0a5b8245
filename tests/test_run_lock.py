"""One writer per output: a second training or evaluation on the same folder or state file is refused, not mixed in."""
import os

import pytest
from test_cli import checkpoint  # noqa: F401 - the tiny checkpoint fixture
from test_train import TINY

from ssm_lab.cli import main
from ssm_lab.run_lock import RunLockedError, exclusive
from ssm_lab.train import LOCK_FILE, TrainConfig, train
from ssm_models.errors import UserError


def test_a_second_holder_is_refused_with_the_first_holders_pid(tmp_path):
    with exclusive(tmp_path / "x.lock", "folder x"):
        with pytest.raises(RunLockedError) as caught:
            with exclusive(tmp_path / "x.lock", "folder x"):
                pass
    assert f"folder x is already in use by pid {os.getpid()}" in str(caught.value)
    assert isinstance(caught.value, UserError)


def test_the_lock_is_free_again_once_its_holder_is_done(tmp_path):
    with exclusive(tmp_path / "x.lock", "folder x"):
        pass
    with exclusive(tmp_path / "x.lock", "folder x") as held:
        assert held.read_text().startswith(f"pid {os.getpid()} on ")


def test_training_into_a_folder_another_run_holds_is_refused_before_writing(tmp_path):
    out = tmp_path / "run"
    with exclusive(out / LOCK_FILE, "training folder"):
        with pytest.raises(RunLockedError, match=f"training folder {out} is already in use by pid"):
            train(TrainConfig(epochs=1, **TINY), out, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_evaluate_on_a_busy_state_file_exits_with_a_clear_message(checkpoint, tmp_path, capsys):  # noqa: F811
    state = tmp_path / "state.json"
    with exclusive(str(state) + ".lock", "evaluation state"):
        code = main(["evaluate", str(checkpoint), "--attack", "pgd", "--steps", "2", "--eps", "0.1", "--n", "4",
                     "--state", str(state), "--out", str(tmp_path / "report.json")])
    assert code == 2
    assert f"evaluation state {state} is already in use by pid {os.getpid()}" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()
