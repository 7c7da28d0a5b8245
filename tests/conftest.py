"""Shared pytest fixtures: an isolated Hugging Face cache and a local Hub server, so no test touches the network."""
from __future__ import annotations

import pytest

from testkit.hub_server import HubEnvironment, HubServer


@pytest.fixture(autouse=True)
def _no_hub_downloads(monkeypatch):
    """No test downloads a real data set: the Hub data path is offline unless a test starts the local Hub
    (`hub_server` / `hub_env` set HF_HUB_OFFLINE themselves, after this)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hub_env(tmp_path, monkeypatch) -> HubEnvironment:
    """A private HF_HOME / cache, telemetry off, offline, endpoint pointing nowhere; `set_offline`, `set_endpoint`."""
    return HubEnvironment(monkeypatch, tmp_path / "hf_home")


@pytest.fixture
def hub_server(tmp_path, hub_env):
    """A running local Hub serving `tmp_path/hub_repos/<org>/<name>/<file>`, with huggingface_hub pointed at it
    and online; `hub_server.env` is the `hub_env` (e.g. `hub_server.env.set_offline(True)`)."""
    root = tmp_path / "hub_repos"
    root.mkdir()
    server = HubServer(root).start()
    hub_env.set_endpoint(server.url)
    hub_env.set_offline(False)
    server.env = hub_env
    yield server
    server.stop()


@pytest.fixture(scope="session")
def serve_checkpoints():
    """`with serve_checkpoints(root):` the app offers the checkpoints under root, from a cold model cache."""
    import contextlib

    @contextlib.contextmanager
    def serving(root):
        from app.models import MODELS

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SSM_LAB_CHECKPOINTS", str(root))
            MODELS.clear()
            yield root
        MODELS.clear()

    return serving


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    """Tiny test models run fastest on one thread; two threads on two shared cores contend badly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
