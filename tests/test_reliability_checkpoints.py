"""The hostile-checkpoint corpus and the Hub faults as CI runs them (RELIABILITY.md sections 2 and 6)."""
from __future__ import annotations

import collections
import io
import pickle

import pytest
import torch

from benchmarks import checkpoint_corpus as corpus
from benchmarks import hub_faults

ISSUE_CATEGORIES = {"pickle", "dtype", "shape", "names", "values", "layout", "config", "traversal", "transfer"}


@pytest.fixture(scope="module")
def results():
    """The whole corpus, locally and through the local Hub (one shared cache) or a lying Hub: about 180 loads."""
    return corpus.run()


@pytest.fixture(scope="module")
def faults():
    """Every fault once, huggingface_hub's retry pauses skipped (the full run, with real pauses, is in
    RELIABILITY.md)."""
    return hub_faults.run(repeat=1, skip_waits=True)


def test_the_corpus_covers_the_issue():
    names = [c.name for c in corpus.CASES]
    assert len(names) == len(set(names)) >= 40
    per_category = collections.Counter(c.category for c in corpus.CASES)
    assert set(per_category) == ISSUE_CATEGORIES
    assert min(per_category.values()) >= 2
    assert sum(len(c.where) for c in corpus.CASES) >= 150  # most cases run both locally and through a Hub


def test_the_pickle_payloads_are_live(tmp_path):
    """Without this, "the sentinel was never created" would prove nothing: a naive loader does create it."""
    for make, load in ((corpus.pickle_payload, pickle.loads),
                       (corpus.torch_payload, lambda data: torch.load(io.BytesIO(data), weights_only=False))):
        sentinel = tmp_path / f"sentinel-{make.__name__}"
        load(make(corpus.Good({}, {}, b"", sentinel)))
        assert sentinel.exists()


def test_every_case_is_rejected_with_its_specific_message(results):
    wrong = [(r["case"], r["where"], r["outcome"], r.get("message", "")[:160]) for r in results
             if not r["expected_message"]]
    assert wrong == []
    assert {r["error"] for r in results} <= {"ConfigError", "CheckpointError"}


def test_no_case_executes_code_or_writes_outside_the_cache(results):
    assert not any(r["executed"] for r in results)
    assert [r["escaped"] for r in results if r["escaped"]] == []


def test_no_case_allocates_more_than_the_bound(results):
    peaks = [r["peak_mib"] for r in results]
    assert all(peak == peak for peak in peaks), "per-load peak RSS needs /proc/self/clear_refs (Linux)"
    assert max(peaks) <= corpus.MAX_PEAK_MIB


def test_the_cache_stays_clean_and_the_good_checkpoint_keeps_loading(results):
    through_hub = [r for r in results if r["where"] != "local"]
    assert len(through_hub) >= 80
    assert [(r["case"], r["cache_problems"]) for r in through_hub if r["cache_problems"]] == []
    assert all(r["good_reloads"] for r in through_hub)


def test_bad_names_never_reach_the_hub(results):
    names = [r for r in results if r["category"] == "traversal" and r["where"] == "hub"]
    assert len(names) >= 5
    assert all(r["requests"] == 0 for r in names)


def test_the_checks_can_fail():
    """The aggregate check flags each broken promise (so an empty list means something)."""
    ok = {"case": "x", "where": "hub", "category": "config", "outcome": "rejected", "expected_message": True,
          "executed": False, "escaped": [], "peak_mib": 1.0, "cache_problems": [], "good_reloads": True,
          "requests": 0}
    assert corpus.failures([ok]) == []
    for change in ({"expected_message": False}, {"executed": True}, {"escaped": ["ESCAPED-x"]}, {"peak_mib": 1e3},
                   {"cache_problems": ["partial file x.incomplete"]}, {"good_reloads": False},
                   {"category": "traversal", "requests": 2}):
        assert len(corpus.failures([{**ok, **change}])) == 1, change


def test_cache_problems_finds_partial_corrupt_and_dangling_files(tmp_path):
    blobs = tmp_path / "models--org--x" / "blobs"
    blobs.mkdir(parents=True)
    good = b"weights"
    (blobs / hub_faults.hashlib.sha256(good).hexdigest()).write_bytes(good)
    assert hub_faults.cache_problems(tmp_path) == []
    (blobs / ("0" * 64)).write_bytes(good)
    (blobs / "abc.1234.incomplete").write_bytes(b"")
    (tmp_path / "models--org--x" / "pointer").symlink_to(blobs / "gone")
    assert len(hub_faults.cache_problems(tmp_path)) == 3


@pytest.mark.parametrize("fault", list(hub_faults.FAULTS))
def test_a_fault_gives_a_clean_retry_or_a_clear_error(faults, fault):
    (trial,) = faults[fault]
    assert trial["outcome"] in ("loaded", "error"), trial
    assert trial["as_expected"], trial  # loads, or a CheckpointError with the message this fault calls for
    assert trial["cache_after_fault"] == []
    assert trial["cache_after_next"] == []
    assert trial["next_ok"], trial.get("next_error")
    if fault in ("drop-once", "drop-every-time", "server-dies", "500-get-once", "500-get-always", "500-always"):
        assert trial["waits_skipped"] > 0  # it did retry, after a pause
