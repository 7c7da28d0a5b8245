"""What an installed package needs: the wheel holds every module, the shipped checkpoints and the README text."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from app import ui
from ssm_models.hub import SHIPPED_ROOT, list_checkpoints, shipped_root

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ssm_models", "ssm_lab", "app")
CHECKPOINT_FILES = ("config.json", "model.safetensors", "README.md", "metrics.json", "curves.json")
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
                                     ".pytest_cache", "test-artifacts", "runs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the tree, so no build/ folder left by an earlier build adds stale files."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, work / "src", ignore=NOT_SOURCES)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(work / "dist"), str(work / "src")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = (work / "dist").glob("*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


@pytest.mark.e2e
def test_the_wheel_holds_every_module_of_the_product(wheel):
    sources = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    missing = sorted(sources - set(wheel.namelist()))
    assert missing == [], f"modules left out of the wheel (add their package to pyproject's list): {missing}"


@pytest.mark.e2e
def test_the_wheel_holds_the_scan_kernel_source_and_no_build_of_it(wheel):
    names = set(wheel.namelist())
    assert "ssm_models/scan_ext/scan_kernel.cpp" in names, "`python -m ssm_models.scan_ext build` needs it"
    assert not [name for name in names if "/_build/" in name], "a build is machine-specific: each install makes its own"


@pytest.mark.e2e
def test_the_wheel_holds_every_shipped_checkpoint_file_and_no_training_state(wheel):
    names = set(wheel.namelist())
    shipped = {f"ssm_models/checkpoints/{p.relative_to(SHIPPED_ROOT).as_posix()}" for p in SHIPPED_ROOT.rglob("*")
               if p.name in CHECKPOINT_FILES}
    assert len(shipped) >= 5 * len(list_checkpoints(SHIPPED_ROOT)) // 2, len(shipped)
    assert sorted(shipped - names) == []
    leftovers = sorted(n for n in names if n.startswith("ssm_models/checkpoints/")
                       and n.rpartition("/")[2] not in CHECKPOINT_FILES)
    assert leftovers == [], leftovers


@pytest.mark.e2e
def test_the_wheel_metadata_carries_the_readme_sections_the_app_shows(wheel):
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode("utf-8")
    for heading in ("## Script the app", "## Library"):
        assert heading in text, heading


def test_installed_checkpoints_inside_the_package_win_over_a_source_checkout(tmp_path):
    package = tmp_path / "site-packages" / "ssm_models"
    (package / "checkpoints").mkdir(parents=True)
    (tmp_path / "site-packages" / "checkpoints").mkdir()
    assert shipped_root(package) == package / "checkpoints"


def test_a_source_checkout_finds_checkpoints_beside_the_packages(tmp_path):
    package = tmp_path / "repo" / "ssm_models"
    package.mkdir(parents=True)
    assert shipped_root(package) == tmp_path / "repo" / "checkpoints"


def test_without_a_readme_file_the_app_reads_the_installed_package_metadata(monkeypatch, tmp_path):
    monkeypatch.setattr(ui, "README", tmp_path / "README.md")
    assert "## Script the app" in ui.readme_text()
    assert ui.api_doc().startswith("## Script the app")


def test_with_neither_a_readme_nor_an_installed_package_the_api_tab_points_to_the_readme(monkeypatch, tmp_path):
    monkeypatch.setattr(ui, "README", tmp_path / "README.md")
    monkeypatch.setattr(ui, "DISTRIBUTION", "no-such-distribution-here")
    assert ui.readme_text() == ""
    assert "README.md" in ui.api_doc()
