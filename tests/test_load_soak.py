"""Reduced load and soak runs against a live app (the full ones: benchmarks/load_test.py and benchmarks/soak.py)."""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.utils import QueueError, Status
from PIL import Image
from test_app_handlers import make_checkpoints

from app import gradio_compat
from benchmarks import load_test, soak

pytestmark = pytest.mark.e2e
MODELS = ("mnist-s4-st", "mnist-s4-ads")
# an upload has no label, so the attack's goal is to change the model's own prediction: with an eps of 1e-6 it
# cannot, and PGD would run every one of its 20 x 1,000 steps (the busy server's caps are raised for it), keeping
# the server busy far longer than a loaded machine needs to fill the queue behind it (within the app's own caps,
# 3 x 200, a job on these tiny models ended in about 0.4 s); the test then ends the jobs with the Cancel endpoint
SLOW_STEPS, SLOW_RESTARTS = 1000, 20
SLOW = dict(load_test.make_request(0, 0, MODELS), attack="PGD (Linf)", eps="0.000001", steps=SLOW_STEPS,
            restarts=SLOW_RESTARTS,
            target="none", source="upload", fit="squash")  # a grey square is no digit: used as it is


@pytest.fixture(autouse=True)
def client_temp_dir(tmp_path, monkeypatch):
    """gradio_client leaves an empty folder in the temp dir for every file it downloads: keep them in tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    make_checkpoints(root)
    return root


@pytest.fixture(scope="module")
def busy_server(checkpoints, tmp_path_factory):
    """2 requests computing and 1 waiting at most, so 4 users at once already meet a full queue."""
    workdir = tmp_path_factory.mktemp("load")
    with load_test.live_server(workdir / "server", checkpoints, SSM_LAB_MAX_CONCURRENCY="2",
                               SSM_LAB_MAX_QUEUE_SIZE="1", SSM_LAB_MAX_STEPS=str(SLOW_STEPS),
                               SSM_LAB_MAX_RESTARTS=str(SLOW_RESTARTS)) as server:
        yield server


def test_concurrent_users_get_exactly_what_a_sequential_run_gives(busy_server, tmp_path):
    report = load_test.run(busy_server, users=4, attacks=2, models=MODELS, quick=True, downloads=tmp_path)
    assert report["errors"] == []
    assert report["replay_errors"] == []
    assert report["completed"] == report["compared"] == 8
    assert report["mismatches"] == []
    assert report["rejected_then_completed"] == report["rejected_requests"]
    assert all(load_test.QUEUE_FULL in message for message in report["rejection_messages"])
    assert report["peak_mib"] >= report["baseline_mib"] > 0
    text = load_test.markdown(report, "python -m benchmarks.load_test --quick", {})
    assert "| results equal to the sequential replay, bit for bit | 8 / 8 |" in text


def wait_for(job, codes, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (code := job.status().code) not in codes:
        if code == Status.FINISHED:  # ended before reaching `codes`: say how, instead of waiting out the timeout
            raise AssertionError(f"job finished before reaching {codes}: error {job.exception()!r}")
        assert time.monotonic() < deadline, f"job still {code} after {timeout} s"
        time.sleep(0.05)


def cancel_as_the_browser_does(url: str, client, timeout: float = 60.0) -> None:
    """Press Cancel in the client's session. The button's event skips the queue (queue=False), so the browser
    posts it to /run/ and a full queue cannot refuse it (gradio_client would send it through the queue). Until
    the handler has registered its cancel event, a moment after the job is taken, the answer is "Nothing to
    cancel" (the browser's Run button registers it first), so it is pressed again until the job acknowledges."""
    deadline = time.monotonic() + timeout
    while True:
        reply = httpx.post(f"{url.rstrip('/')}/gradio_api/run/cancel_attack",
                           json={"data": [], "session_hash": client.session_hash}, timeout=30)
        assert reply.status_code == 200, reply.text
        if "Cancelling" in reply.json()["data"][0]:
            return
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.1)


def test_a_full_queue_refuses_clearly_and_a_later_retry_is_served(busy_server, tmp_path):
    Image.fromarray(np.full((28, 28), 128, dtype=np.uint8)).save(tmp_path / "grey.png")
    slow = dict(SLOW, upload=handle_file(str(tmp_path / "grey.png")))
    clients = [load_test.client_for(busy_server, tmp_path / f"user-{i}") for i in range(4)]
    # one at a time: gradio counts an event as waiting until a worker takes it, so with a queue of 1 a second job
    # sent before the first is taken would itself be refused as "queue full"
    running = []
    for client, model in zip(clients, MODELS):
        running.append(client.submit(**dict(slow, model=model), api_name="/attack"))
        wait_for(running[-1], (Status.PROCESSING, Status.ITERATING, Status.PROGRESS))
    waiting = clients[2].submit(**slow, api_name="/attack")
    wait_for(waiting, (Status.IN_QUEUE,))
    with pytest.raises(QueueError, match="Queue is full! Please try again"):
        clients[3].predict(**load_test.make_request(3, 0, MODELS), api_name="/attack")
    assert all(job.status().code != Status.FINISHED for job in running)  # the refusal came while they computed
    for client, job in zip(clients, running):  # each session cancels its own job, which returns its best point
        cancel_as_the_browser_does(busy_server.url, client)
        assert job.result(timeout=120)[-1]["results"]["cancelled"] is True
    wait_for(waiting, (Status.PROCESSING, Status.ITERATING, Status.PROGRESS))  # a freed worker took it
    cancel_as_the_browser_does(busy_server.url, clients[2])
    assert waiting.result(timeout=120)[-1]["results"]["cancelled"] is True
    clean, adv, *_ = clients[3].predict(**load_test.make_request(3, 0, MODELS), api_name="/attack")
    assert adv
    assert clean


def test_soak_leaves_no_memory_fd_or_temp_file_growth(checkpoints, tmp_path):
    age = 3
    with load_test.live_server(tmp_path / "server", checkpoints, SSM_LAB_MAX_FILE_AGE=str(age)) as server:
        report = soak.run(server, 60, MODELS, tmp_path / "client", soak.idle_seconds(age), warm_up=30)
    assert report["unexpected"] == []
    assert set(report["kinds"]) == set(soak.KINDS)
    growth = soak.growth(report)
    idle, ref = report["after_idle"], growth["ref"]
    assert growth["rss"] < soak.RSS_GROWTH_LIMIT, growth
    assert growth["fds"] <= 4, (growth, idle)
    assert idle.fds <= ref.fds + 4, (growth, idle)
    # files were made along the way; after the idle period only the last attack's are left, no older file or folder
    assert growth["temp_files_max"] > 0, (growth, idle)
    assert idle.temp_files > 0, (growth, idle)
    assert idle.stale_files == idle.stale_dirs == 0, idle
    assert soak.passed(report)


def test_an_image_cached_by_many_requests_at_once_is_never_seen_half_written(tmp_path):
    from gradio import processing_utils

    gradio_compat.atomic_image_cache()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    expected = processing_utils.encode_pil_to_bytes(image, "png")
    path = processing_utils.save_pil_to_cache(image, str(tmp_path), format="png")
    seen, stop = set(), threading.Event()

    def write():
        for _ in range(50):
            assert processing_utils.save_pil_to_cache(image, str(tmp_path), format="png") == path

    def read():
        while not stop.is_set():
            with open(path, "rb") as f:
                seen.add(f.read() == expected)

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write) for _ in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert seen == {True}
    assert sorted(p.name for p in (tmp_path / Path(path).parent.name).iterdir()) == ["image.png"]  # no staging left


def test_the_cache_clean_up_survives_files_added_while_it_runs(tmp_path):
    from gradio import route_utils

    gradio_compat.surviving_cache_cleanup()
    old, young = tmp_path / "old.png", tmp_path / "young.png"
    for path in (old, young):
        path.write_bytes(b"x")
    files = {str(old), str(young), str(tmp_path / "already-gone.png")}
    files |= {str(tmp_path / f"missing-{i}") for i in range(2000)}
    blocks = SimpleNamespace(blocks={}, temp_file_sets=[files])
    stop = threading.Event()

    def add():  # a request thread caching new outputs during the passes
        for i in range(200_000):
            if stop.is_set():
                break
            files.add(str(tmp_path / f"new-{i}"))

    adder = threading.Thread(target=add)
    adder.start()
    try:
        for _ in range(5):
            route_utils.delete_files_created_by_app(blocks, age=3600)
    finally:
        stop.set()
        adder.join()
    assert old.exists()
    assert young.exists()  # both younger than an hour
    assert not any("missing" in f or "already-gone" in f for f in files)  # forgotten, not kept for ever
    time.sleep(1.1)
    route_utils.delete_files_created_by_app(blocks, age=1)
    assert not old.exists()
    assert not young.exists()
