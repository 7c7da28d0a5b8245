"""keep_freed_memory: a training step stops paying page faults for memory it freed one step earlier."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

STEP_FAULTS = """
import json, resource, sys
from ssm_lab.allocator import keep_freed_memory
result = keep_freed_memory()
import torch, torch.nn.functional as F
from ssm_models import create_model
torch.set_num_threads(1)
torch.manual_seed(0)
model = create_model("s4", tokenizer="patch", patch_size=4, d_model=64, n_layers=2, d_state=32, image_size=28)
x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
def step():
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
for _ in range(10):
    step()
faults = []
for _ in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"allocator": result, "faults_per_step": sorted(faults)[len(faults) // 2]}))
"""


def _run(opt_out: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("SSM_LAB_SYSTEM_MALLOC", None)
    if opt_out:
        env["SSM_LAB_SYSTEM_MALLOC"] = "1"
    out = subprocess.run([sys.executable, "-c", STEP_FAULTS], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.e2e
def test_training_steps_reuse_freed_memory_unless_opted_out():
    tuned, default = _run(opt_out=False), _run(opt_out=True)
    if not sys.platform.startswith("linux"):
        assert "defaults" in tuned["allocator"]
        return
    assert tuned["allocator"].startswith("glibc malloc keeping freed memory"), tuned
    assert "SSM_LAB_SYSTEM_MALLOC" in default["allocator"]
    # median over 15 steps: now and then one step still grows the heap (196-784 faults), which says nothing
    # about reuse. The C library's defaults: a median of ~2,000 faults per step of this model; tuned: 0.
    assert tuned["faults_per_step"] < 50, tuned
    assert default["faults_per_step"] > 10 * max(tuned["faults_per_step"], 1), (tuned, default)


@pytest.mark.e2e
def test_the_cli_and_the_app_apply_it_at_start():
    probe = ("import contextlib, io, sys\n"
             "from ssm_lab import allocator\n"
             "if sys.argv[1] == 'cli':\n"
             "    from ssm_lab.cli import main\n"
             "    with contextlib.redirect_stdout(io.StringIO()):\n"
             "        main(['list'])\n"
             "else:\n"
             "    from app.__main__ import prepare_process\n"
             "    prepare_process()\n"
             "print(allocator._STATE.get('result'))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SSM_LAB_SYSTEM_MALLOC", None)
    for entry in ("cli", "app"):
        out = subprocess.run([sys.executable, "-c", probe, entry], env=env, capture_output=True, text=True,
                             timeout=120, check=True, cwd=REPO)
        assert out.stdout.strip().splitlines()[-1] != "None", (entry, out.stdout, out.stderr)
