"""The Dockerfile's data steps, checked as far as a machine without Docker allows: parsed, and the fetch line run."""
from __future__ import annotations

import fnmatch
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ssm_lab.cli import build_parser
from ssm_lab.datasets.sample import SAMPLE_DIR

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    lines, joined = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        joined += raw.rstrip().removesuffix("\\") + " " if raw.rstrip().endswith("\\") else raw.strip()
        if not raw.rstrip().endswith("\\"):
            lines.append(joined)
            joined = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def fetch_step() -> tuple[int, str]:
    found = [(i, args) for i, (kind, args) in enumerate(instructions()) if kind == "RUN" and " data fetch" in args]
    assert len(found) == 1, f"expected one RUN with `data fetch`, found {found}"
    return found[0]


def env_values(upto: int) -> dict[str, str]:
    values = {}
    for kind, args in instructions()[:upto]:
        if kind == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def test_the_fetch_step_is_non_fatal_and_its_command_parses():
    _, command = fetch_step()
    fetch, _, fallback = command.partition("||")
    assert fallback.strip().startswith("echo "), "a failed fetch must not fail the build"
    argv = shlex.split(fetch)
    assert argv[:3] == ["python", "-m", "ssm_lab.cli"]
    args = build_parser().parse_args(argv[3:])
    assert (args.command, args.data_command) == ("data", "fetch")
    assert set(args.dataset) == {"mnist", "cifar10"}
    assert args.split == ["test"]


def test_the_fetch_runs_as_the_runtime_user_into_the_cache_the_app_reads():
    index, _ = fetch_step()
    steps = instructions()
    users = [(i, args.strip()) for i, (kind, args) in enumerate(steps) if kind == "USER"]
    before = [user for i, user in users if i < index]
    assert before, f"the fetch must run as the app's user, USER steps: {users}"
    assert before[-1] == "user", f"the fetch must run as the app's user, USER steps: {users}"
    assert all(user == "user" for i, user in users if i > index), "the app must run as the user that fetched"
    fetch_env, final_env = env_values(index), env_values(len(steps))
    assert fetch_env["SSM_LAB_CACHE"].startswith(fetch_env["HOME"] + "/"), fetch_env
    assert final_env["SSM_LAB_CACHE"] == fetch_env["SSM_LAB_CACHE"]
    assert "SSM_LAB_DATA" not in final_env, "no data folder is mounted in a Space"


def test_the_bundled_sample_goes_into_the_image():
    copies = [args.split() for kind, args in instructions() if kind == "COPY"]
    assert any(parts[-2] == "ssm_lab" for parts in copies), f"ssm_lab/ (and its sample) is not copied: {copies}"
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for sample in sorted(SAMPLE_DIR.glob("*.npz")):
        relative = sample.relative_to(ROOT).as_posix()
        hits = [pattern for pattern in ignored if fnmatch.fnmatch(relative, pattern)
                or relative.startswith(pattern.rstrip("/") + "/")]
        assert not hits, f"{relative} is excluded from the image by {hits}"


@pytest.mark.e2e  # runs the step's shell line in a subprocess
def test_the_fetch_line_falls_back_with_one_message_when_offline(tmp_path):
    _, command = fetch_step()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SSM_LAB_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(["sh", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "the app will use the bundled test samples" in done.stdout


def test_the_image_builds_the_compiled_scan_with_a_compiler_that_leaves_in_the_same_step():
    steps = instructions()
    builds = [i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "-m ssm_models.scan_ext build" in args]
    assert len(builds) == 1, f"expected one RUN building the scan kernel, found {builds}"
    command = steps[builds[0]][1]
    assert "--require" in command.split(), "a failed kernel build must fail the image build"
    assert command.index("install") < command.index("scan_ext build") < command.index("purge"), command
    copied = [i for i, (kind, args) in enumerate(steps) if kind == "COPY" and args.split()[-2] == "ssm_models"]
    assert copied and copied[0] < builds[0], "the kernel source must be copied before it is built"
    users = [i for i, (kind, args) in enumerate(steps) if kind == "USER"]
    assert users and builds[0] < users[0], "apt-get needs root: build before the USER step"
