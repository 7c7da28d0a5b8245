"""The app as a script sees it: `python -m app` in a subprocess, driven through gradio_client."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from gradio_client import Client
from PIL import Image
from test_app_handlers import make_checkpoints

from testkit.app_process import START_TIMEOUT_S, running_app

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
_SHARED: dict = {}


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """One app process for the server and the browser tests: started once per session, stopped at its end."""
    if "server" not in _SHARED:
        root = tmp_path_factory.mktemp("server")
        make_checkpoints(root / "checkpoints")
        stack = contextlib.ExitStack()
        request.config.add_cleanup(stack.close)
        _SHARED["server"] = stack.enter_context(running_app(root / "checkpoints", root / "server.log"))
        print(f"app answered after {_SHARED['server'][1]:.1f} s")
    return _SHARED["server"]


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


ATTACK = dict(model="mnist-s4-st", source="dataset", dataset="MNIST", index=3, upload=None, sketch=None,
              attack="PGD (Linf)", eps="0.3", steps=5, step_size=0, restarts=1, target="none", seed=0)


def test_server_starts_and_names_its_endpoints(server, client):
    url, seconds = server
    assert seconds < START_TIMEOUT_S
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/startup", "/select_model", "/preview", "/cost", "/attack", "/cancel_attack", "/compare", "/transfer",
            "/evaluate", "/eps_curves", "/load_hub_model"} <= endpoints


def test_startup_preselects_a_checkpoint(client):
    model, table, *_ = client.predict(api_name="/startup")
    label = "MNIST · S4 · standard · no AdS  [clean 50.0%]  (mnist-s4-st)"
    assert model["value"] == "mnist-s4-st"
    assert [label, "mnist-s4-st"] in [list(c) for c in model["choices"]]
    assert table["headers"][0] == "name"
    assert len(table["data"]) == 3


def test_attack_endpoint_returns_images_plots_files_and_card(client):
    out = client.predict(**ATTACK, api_name="/attack")
    clean, adv, delta, summary, topk, trace, scaling, tokens, files, card = out
    for path in (clean, adv, delta):
        with Image.open(path) as img:
            assert img.format == "PNG"
            assert img.size == (224, 224)
    assert "PGD (Linf)" in summary
    assert all(isinstance(plot, dict) and plot.get("plot") for plot in (topk, trace, scaling, tokens))
    names = sorted(Path(f).name for f in files)
    assert names == ["adversarial.npy", "adversarial.png", "run_card.json"]
    assert card["attack"] == "pgd"
    assert card["params"]["steps"] == 5
    assert card["results"]["linf"] <= 0.3 + 1e-6


@pytest.mark.parametrize("change, message", [
    (dict(steps=100_000), "greater than maximum value 200|SSM_LAB_MAX_STEPS"),
    (dict(eps="1.5"), "eps=1.5 is above the limit of 1"),
    (dict(eps="-1"), "eps must not be negative"),
    (dict(model="/etc"), "not local paths"),
    (dict(attack="FAB-T", target="2"), "no targeted mode"),
])
def test_invalid_parameters_come_back_as_clear_errors(client, change, message):
    with pytest.raises(Exception, match=message):
        client.predict(**{**ATTACK, **change}, api_name="/attack")


def test_multi_model_endpoints_need_no_startup(server):
    fresh = Client(server[0], verbose=False)  # a new session: /startup never ran, the menus were never filled
    figure, curves = fresh.predict(models=["mnist-s4-st", "mnist-s4-ads"], dataset="MNIST", n=4,
                                   attack="FGSM", eps_values="0, 0.3", steps=1, restarts=1, seed=0,
                                   api_name="/eps_curves")
    assert set(curves["curves"]) == {"mnist-s4-st", "mnist-s4-ads"}
    with pytest.raises(Exception, match="no-such-model"):
        fresh.predict(models=["no-such-model"], dataset="MNIST", n=4, attack="FGSM", eps_values="0, 0.3", steps=1,
                      restarts=1, seed=0, api_name="/eps_curves")


def test_cost_and_preview_endpoints(client):
    cost = client.predict(model="mnist-s4-st", attack="FGSM", eps="0.1", steps=1, step_size=0, restarts=1,
                          target="none", seed=0, api_name="/cost")
    assert "Cost before running" in cost
    assert "1 backward" in cost
    image, note = client.predict(model="mnist-s4-st", source="dataset", dataset="MNIST", index=5, upload=None,
                                 sketch=None, api_name="/preview")
    assert Path(image).is_file()
    assert "MNIST test image #5" in note


def test_offline_hub_repo_message(client):
    with pytest.raises(Exception, match="offline"):
        client.predict(repo_id="nobody/nothing", revision="", api_name="/load_hub_model")
