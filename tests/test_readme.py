"""README contract: it opens with the two commands, CI runs its test command verbatim, the app shows its API doc."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_starts_with_launch_and_test_commands():
    launch, test = _commands()[:2]
    assert launch.endswith("python -m app")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in [line.strip() for line in ci]


def test_app_script_tab_shows_the_readme_example():
    from app.ui import api_doc

    doc = api_doc()
    assert "from gradio_client import Client" in doc
    assert 'api_name="/attack"' in doc
