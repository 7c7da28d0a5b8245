"""Start-up work of `python -m app`: what is skipped, what is deferred, and what the warm-up prepares."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_app_handlers import make_checkpoints

import app.__main__ as app_main
from app import handlers, inputs
from app.models import MODELS, default_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.e2e
def test_gradio_does_not_rewrite_its_stubs_and_still_builds_components():
    out = _run("from app.gradio_compat import skip_gradio_stub_writing\n"
               "skip_gradio_stub_writing()\n"
               "import gradio as gr\n"
               "from gradio import component_meta\n"
               "box = gr.Textbox(label='x', render=False)\n"
               "print(getattr(component_meta.create_or_modify_pyi, 'stubs_skipped', False), type(box).__name__,"
               " 'change' in dir(box))")
    assert out == "True Textbox True"


@pytest.mark.e2e
def test_engine_imports_leave_torchattacks_and_scipy_for_first_use():
    out = _run("import sys, json\n"
               "import ssm_lab.analysis, ssm_lab.attacks, ssm_lab.plots, ssm_lab.single\n"
               "from ssm_lab.evaluate import versions\n"
               "from ssm_lab.attacks import make_attack\n"
               "from ssm_models import create_model\n"
               "model = create_model('s4', d_model=8, n_layers=1, d_state=4, image_size=8)\n"
               "cost = make_attack('apgd-ce', model, eps=0.1, steps=2).cost(1)\n"
               "loaded = {m: m in sys.modules for m in ('torchattacks', 'pyautoattack', 'scipy')}\n"
               "print(json.dumps([loaded, versions()['torchattacks'], cost['backward'] > 0]))")
    loaded, version, costed = json.loads(out)
    assert loaded == {"torchattacks": False, "pyautoattack": False, "scipy": False}
    assert version[0].isdigit()
    assert costed  # the version comes from metadata; costs need no import either


@pytest.fixture
def served(tmp_path, serve_checkpoints, monkeypatch):
    make_checkpoints(tmp_path / "checkpoints")
    monkeypatch.setattr(app_main, "WARM_UP_AFTER_S", 0.01)
    was_set = handlers.CLIENT_ARRIVED.is_set()
    handlers.CLIENT_ARRIVED.clear()
    with serve_checkpoints(tmp_path / "checkpoints"):
        yield
    if was_set:
        handlers.CLIENT_ARRIVED.set()


def test_warm_up_loads_the_preselected_model_and_its_test_set_when_no_page_comes(served):
    inputs.load_test_split.cache_clear()
    app_main._warm_up()
    assert len(MODELS) == 1
    assert default_checkpoint() == "mnist-s4-st"
    assert inputs.load_test_split.cache_info().currsize == 1  # the preview decoded the MNIST test set


def test_warm_up_stays_out_of_the_way_of_a_page_that_came_first(served):
    handlers.startup()  # what the page's load event calls
    assert handlers.CLIENT_ARRIVED.is_set()
    app_main._warm_up()
    assert len(MODELS) == 0


@pytest.mark.parametrize("threads, telemetry", [("1", None), ("2", "True")])
@pytest.mark.e2e
def test_process_is_prepared_before_torch_and_gradio_load(monkeypatch, threads, telemetry):
    monkeypatch.setenv("SSM_LAB_TORCH_THREADS", threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # SSM_LAB_TORCH_THREADS wins, as torch.set_num_threads did
    if telemetry is None:
        monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    else:
        monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", telemetry)
    out = _run("import os, sys, json\n"
               "from app.__main__ import prepare_process\n"
               "prepare_process()\n"
               "early = [m in sys.modules for m in ('torch', 'gradio')]\n"
               "import torch\n"
               "print(json.dumps([early, torch.get_num_threads(), os.environ['GRADIO_ANALYTICS_ENABLED']]))")
    assert json.loads(out) == [[False, False], int(threads), telemetry or "False"]


def test_a_bad_thread_count_stops_the_app_with_a_message_before_anything_loads(monkeypatch, capsys):
    monkeypatch.setenv("SSM_LAB_TORCH_THREADS", "many")
    with pytest.raises(SystemExit) as stopped:
        app_main.main([])
    assert stopped.value.code == 2
    assert "SSM_LAB_TORCH_THREADS must be a number, got 'many'" in capsys.readouterr().err
