"""Same request, same answer bit for bit: every attack of the app, fresh processes, the live server (section 7)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_app_handlers import make_checkpoints
from test_app_server import client, server  # noqa: F401 - the shared live app (started once per session)

from app.models import MODELS
from app.request_types import AttackRequest
from benchmarks import determinism as D

MODEL, INDEX = "mnist-s4-st", 3
REQUESTS = D.requests(MODEL, INDEX)


@pytest.fixture(scope="module", autouse=True)
def checkpoints(tmp_path_factory, serve_checkpoints):
    root = tmp_path_factory.mktemp("checkpoints")
    make_checkpoints(root)  # seeded: the same weights as the live server's own copy
    with serve_checkpoints(root):
        yield root


@pytest.fixture(scope="module")
def answers():
    """label -> fingerprints of its first answer (model freshly loaded) and its second (from the model cache)."""
    out = {}
    for label, kwargs in REQUESTS.items():
        MODELS.clear()
        out[label] = (D.attack_once(kwargs)[0], D.attack_once(kwargs)[0])
    return out


def test_every_attack_of_the_app_is_covered():
    from app.attack_menu import ATTACK_MENU

    assert set(ATTACK_MENU) < set(REQUESTS)
    assert REQUESTS["PGD (Linf), target 3"]["target"] == "3"


@pytest.mark.parametrize("label", list(REQUESTS))
def test_the_same_request_twice_is_bit_identical(answers, label):
    first, second = answers[label]
    assert len(first) == 12  # images, summary, four figures, run card, the three downloads
    assert D.differences(first, second) == []


def test_the_fingerprint_sees_one_ulp_and_another_seed(tmp_path):
    """Bit-identical means something: one float32 step in one pixel, or another seed, changes the fingerprint."""
    from app import handlers

    kwargs = REQUESTS["PGD (Linf)"]
    out = handlers.run_attack(AttackRequest(**kwargs), progress=lambda *a, **k: None)
    base = D.fingerprint(out)
    npy = Path(out.files[1])
    adv = np.load(npy)
    adv.flat[0] = np.nextafter(adv.flat[0], np.float32(1), dtype=np.float32)
    np.save(npy, adv)
    assert D.differences(base, D.fingerprint(out)) == ["adversarial.npy"]
    other = D.attack_once({**kwargs, "seed": kwargs["seed"] + 1})[0]
    assert "adversarial.npy" in D.differences(base, other)


@pytest.mark.e2e
def test_fresh_processes_give_the_same_answer(answers):
    labels = ["PGD (Linf)", "Square"]
    fresh = D.children(MODEL, INDEX, labels)  # two processes side by side; SSM_LAB_CHECKPOINTS is inherited
    for label in labels:
        assert D.differences(fresh[0][label], fresh[1][label]) == [], label
        assert D.differences(fresh[0][label], answers[label][0]) == [], label


@pytest.mark.e2e
def test_the_live_server_gives_the_same_answer_twice(client, answers):  # noqa: F811
    kwargs = REQUESTS["PGD (Linf)"]
    replies = [client.predict(**kwargs, api_name="/attack") for _ in range(2)]
    images = [[Path(p).read_bytes() for p in reply[:3]] for reply in replies]
    assert images[0] == images[1]
    cards = [{**reply[9], "results": {k: v for k, v in reply[9]["results"].items() if k != "seconds"}}
             for reply in replies]
    assert json.dumps(cards[0], sort_keys=True) == json.dumps(cards[1], sort_keys=True)
    arrays = [np.load(next(p for p in reply[8] if p.endswith(".npy"))) for reply in replies]
    assert arrays[0].tobytes() == arrays[1].tobytes()
    # and the same array as this process computed: the server's copy of the checkpoints has the same weights
    assert D._canonical(arrays[0]) == D._canonical(np.load(_in_process_npy(kwargs)))


def _in_process_npy(kwargs: dict) -> str:
    from app import handlers

    return handlers.run_attack(AttackRequest(**kwargs), progress=lambda *a, **k: None).files[1]
