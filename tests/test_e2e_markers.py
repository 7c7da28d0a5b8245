"""Every test that starts a process, the app's server or a browser carries the e2e marker, so `-m "not e2e"` is fast."""
from __future__ import annotations

from pathlib import Path

from testkit.process_scan import unmarked_process_tests

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_every_test_that_starts_a_process_is_marked_e2e():
    problems = unmarked_process_tests(ROOT)
    assert problems == [], "mark these @pytest.mark.e2e:\n" + "\n".join(problems)


def test_a_process_reached_through_helpers_and_fixtures_is_found_and_the_chain_named(tmp_path):
    write(tmp_path / "benchmarks" / "runner.py", "import subprocess\n\n"
          "def children():\n    return subprocess.Popen(['true'])\n")
    write(tmp_path / "tests" / "conftest.py", "import pytest\nfrom benchmarks import runner as R\n\n"
          "@pytest.fixture\ndef live():\n    return R.children()\n")
    write(tmp_path / "tests" / "test_x.py", "import pytest\nfrom benchmarks.runner import children\n\n"
          "def helper():\n    return children()\n\n"
          "def test_through_a_helper():\n    helper()\n\n"
          "def test_through_a_conftest_fixture(live):\n    pass\n\n"
          "def test_in_process():\n    assert 1 + 1 == 2\n\n"
          "@pytest.mark.e2e\ndef test_marked():\n    helper()\n")
    assert sorted(unmarked_process_tests(tmp_path)) == [
        "test_x::test_through_a_conftest_fixture: test_x.test_through_a_conftest_fixture -> conftest.live"
        " -> benchmarks.runner.children -> .Popen",
        "test_x::test_through_a_helper: test_x.test_through_a_helper -> test_x.helper"
        " -> benchmarks.runner.children -> .Popen",
    ]


def test_a_module_level_pytestmark_covers_every_test_of_the_file(tmp_path):
    write(tmp_path / "tests" / "test_y.py", "import subprocess\nimport pytest\n\npytestmark = pytest.mark.e2e\n\n"
          "def test_runs_a_child():\n    subprocess.run(['true'])\n")
    assert unmarked_process_tests(tmp_path) == []


def test_a_server_launched_in_process_counts_too(tmp_path):
    write(tmp_path / "tests" / "test_z.py", "def test_serves(demo):\n    demo.launch(prevent_thread_lock=True)\n")
    assert unmarked_process_tests(tmp_path) == ["test_z::test_serves: test_z.test_serves -> .launch"]
