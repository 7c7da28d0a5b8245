"""Killed runs resume exactly: a shortened `benchmarks/kill_resume.py` (real processes, real SIGKILL, a real tmpfs)."""
import random

import pytest
import torch

from benchmarks.disk_full import disk_full_trials, disk_passed
from benchmarks.kill_fetch import fetch_passed, fetch_trials
from benchmarks.kill_files import file_differences, folder_problems
from benchmarks.kill_resume import _trained_checkpoint, evaluation_trials, lock_trial, passed, summary, training_trials
from ssm_models import create_model
from ssm_models.hub import save_pretrained


def log(message: str) -> None:
    print(message)


def test_the_checks_see_a_truncated_file_a_changed_byte_and_a_leftover_temporary(tmp_path):
    torch.manual_seed(0)
    save_pretrained(create_model("s4", d_model=8, n_layers=1, d_state=4, image_size=8), tmp_path / "a")
    save_pretrained(create_model("s4", d_model=8, n_layers=1, d_state=4, image_size=8), tmp_path / "b")
    weights = tmp_path / "b" / "model.safetensors"
    assert file_differences(tmp_path / "a", tmp_path / "b") == ["model.safetensors: differs"]
    weights.write_bytes(weights.read_bytes()[:-7])
    (tmp_path / "b" / ".config.json.x1.tmp").write_text("{")
    problems, temporaries = folder_problems(tmp_path / "b")
    assert [p.split(":")[0] for p in problems] == ["model.safetensors"]
    assert temporaries == 1


@pytest.mark.e2e
def test_trainings_killed_at_random_and_inside_a_checkpoint_write_resume_to_the_uninterrupted_files(tmp_path):
    rows, _ = training_trials(tmp_path, 2, random.Random(0), log)
    assert [summary(r) for r in rows if not passed(r)] == []
    assert sum(r["in_write"] for r in rows) >= 1, "no kill landed inside a write"


@pytest.mark.e2e
def test_evaluations_killed_mid_run_resume_to_the_uninterrupted_report_and_never_overclaim(tmp_path):
    rows = evaluation_trials(tmp_path, _trained_checkpoint(tmp_path), 2, 50, random.Random(0), log)
    assert [summary(r) for r in rows if not passed(r)] == []


@pytest.mark.e2e
def test_fetches_killed_mid_transfer_or_mid_write_leave_nothing_unverified(tmp_path):
    rows = fetch_trials(tmp_path, 1, random.Random(0), log)
    assert [r for r in rows if not fetch_passed(r)] == []
    assert {r["what"] for r in rows} == {"model download (load_model)", "Hub data set (MNIST test Parquet)",
                                         "ssm-lab import-reference"}


@pytest.mark.e2e
def test_a_second_training_on_a_busy_folder_is_refused_naming_the_holder(tmp_path):
    row = lock_trial(tmp_path, log)
    assert row["refused"], row
    assert row["first_rc"] == 0, row


@pytest.mark.e2e
def test_a_disk_that_fills_mid_run_gives_a_clear_error_and_resumes_once_freed(tmp_path):
    rows = disk_full_trials(tmp_path, log)
    if "skipped" in rows[0]:
        pytest.skip(rows[0]["skipped"])  # only where no tmpfs can be mounted (not root)
    assert [r for r in rows if not disk_passed(r)] == []
