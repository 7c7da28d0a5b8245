"""torchrun support: sharding helpers, and 2-process CPU training and evaluation against the single-process run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssm_lab import distributed
from ssm_lab.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], late_rank: bool = False, script: str | None = None) -> subprocess.CompletedProcess:
    """Two ranks of `ssm-lab ARGS` (rank 1 late with `late_rank`), or of tests/SCRIPT."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", PYTHONPATH=str(ROOT))
    # `--` keeps torchrun's own parser away from our options (it would read `--n` as an abbreviation of its own)
    entry = [str(ROOT / "tests" / "late_rank_cli.py"), "--"] if late_rank else ["-m", "ssm_lab.cli", "--"]
    if script is not None:
        entry = [str(ROOT / "tests" / script)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           *entry, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_shard_is_a_deterministic_partition():
    items = list(range(11))
    strided = [distributed.shard(items, rank_=r, world=3) for r in range(3)]
    blocks = [distributed.shard(items, strided=False, rank_=r, world=3) for r in range(3)]
    assert strided == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert blocks == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert distributed.shard(items) == items  # one process: everything


def test_single_process_helpers_change_nothing(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.init() is False
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_object(3) == 3
    assert distributed.mean_across_ranks(2.5) == 2.5
    assert distributed.is_main()
    assert distributed.world_size() == 1
    grad = torch.tensor([1.0, -2.0])
    assert torch.equal(distributed.average_gradients([grad])[0], torch.tensor([1.0, -2.0]))
    distributed.barrier()


@pytest.mark.e2e
def test_two_process_training_then_evaluation_matches_one_process(tmp_path):
    out = tmp_path / "run"
    proc = _torchrun(["train", "--arch", "s4", "--d-model", "8", "--d-state", "4", "--n-layers", "1",
                      "--tokenizer", "patch", "--patch-size", "7", "--epochs", "2", "--batch-size", "32",
                      "--lr", "0.01", "--train-limit", "1024", "--curve-points", "16", "--val-points", "16",
                      "--out", str(out)])
    printed = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1, proc.stdout  # only rank 0 reports
    history = json.loads((out / "curves.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[1]["train_loss_running"] < history[0]["train_loss_running"]
    assert (out / "model.safetensors").exists()
    assert (out / "last" / "model.safetensors").exists()
    assert not list(out.rglob("*.tmp"))
    assert torch.load(out / "train_state.pt", weights_only=True)["epoch"] == 2

    # 4 batches of 10 points, 2 per rank; every batch is the one the single process attacks
    common = [str(out / "last"), "--n", "40", "--attack", "fgsm", "--attack", "pgd", "--steps", "2",
              "--eps", "0.03", "--batch-size", "10"]
    # rank 1 arrives late, after rank 0 has saved batches to the state file: it must still get the same batches
    _torchrun(["evaluate", *common, "--out", str(tmp_path / "ddp.json"), "--state", str(tmp_path / "state.json")],
              late_rank=True)
    assert main(["evaluate", *common, "--out", str(tmp_path / "single.json")]) == 0
    ddp, single = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("ddp", "single"))
    assert ddp["clean"] == single["clean"]
    assert ddp["clean"]["correct"] > 0
    for a, b in zip(ddp["attacks"], single["attacks"], strict=True):
        assert (a["attack"], a["correct"], a["n"], a["accuracy"]) == (b["attack"], b["correct"], b["n"], b["accuracy"])
        assert a["predictions"] == b["predictions"]
        assert a["complete"]
    assert ddp["worst_case"] == single["worst_case"]
    # not a vacuous comparison: some clean-correct points fall to the attack and some survive it
    assert any(0 < attack["correct"] < single["clean"]["correct"] for attack in single["attacks"])
    state = json.loads((tmp_path / "state.json").read_text())  # rank 0 saved every rank's points
    assert all(r is not None for entry in state["attacks"].values() for r in entry["robust"])


@pytest.mark.e2e
def test_two_process_yopo_keeps_the_ranks_weights_identical():
    proc = _torchrun([], script="ddp_yopo_steps.py")
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert printed == [{"max_difference": 0.0}], proc.stdout
