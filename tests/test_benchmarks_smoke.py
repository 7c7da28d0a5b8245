"""The benchmark suite's machinery on tiny sizes: markdown, machine facts, ratios, JSON block, regression check."""
from __future__ import annotations

import json
import re

import pytest
import torch

from benchmarks.harness import cpu_model, measure, measure_interleaved
from benchmarks.naive_cauchy import naive_nplr_kernel
from benchmarks.report import DATA_OPEN, parse_previous
from benchmarks.results import Row, Section, Target, compare_sections
from benchmarks.sections import SECTIONS
from benchmarks.suite import main


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    threads = torch.get_num_threads()
    try:
        status = main(["--quick", "--threads", "1", "--output", str(out)])
    finally:
        torch.set_num_threads(threads)  # the suite sets it for the whole process
    return status, out


@pytest.mark.e2e
def test_quick_run_writes_machine_info_and_every_section(quick_run):
    status, out = quick_run
    assert status == 0
    text = out.read_text(encoding="utf-8")
    assert f"| CPU | {cpu_model()} |" in text
    assert re.search(r"\| load average \(1/5/15 min\) \| [\d.]+/[\d.]+/[\d.]+ at the start", text)
    assert f"| torch | {torch.__version__}, 1 thread(s)" in text
    assert "| section | what | ours | peer | ratio | target | result |" in text
    for key in SECTIONS:
        assert f"## {key}: " in text
        assert f"Reproduce: `.venv/bin/python -m benchmarks --only {key} --threads 1 --quick`" in text
    assert "(peer / ours)" in text
    assert "(ours / peer)" in text  # both ratio kinds are rendered
    assert "**The section failed**" not in text


@pytest.mark.e2e
def test_json_block_round_trips_with_ratios(quick_run):
    _, out = quick_run
    text = out.read_text(encoding="utf-8")
    block = text[text.index(DATA_OPEN):]
    assert "--" not in block[len(DATA_OPEN):block.rindex("-->")]  # legal inside an HTML comment
    machine, sections = parse_previous(out)
    assert machine["torch_threads"] == 1
    assert machine["load_average_start"]
    assert list(sections) == list(SECTIONS)
    for section in sections.values():
        assert section.quick
        assert section.rows
        for row in section.rows:
            assert row.ours is not None
            assert row.ours > 0
            if row.peer is not None:
                assert row.ratio is not None
                assert row.ratio > 0
            for name, timing in section.timings.items():
                assert len(timing["samples"]) >= 1, name


@pytest.mark.e2e
def test_regression_against_a_doctored_previous_file_is_flagged(quick_run, tmp_path):
    _, out = quick_run
    text = out.read_text(encoding="utf-8")
    payload = json.loads(text[text.index(DATA_OPEN) + len(DATA_OPEN):text.rindex("-->")])
    for section in payload["sections"]:
        if section["key"] == "s4-kernel":
            for row in section["rows"]:
                row["ours"] /= 100  # the previous run was "100x faster": flagged however loaded this machine is
    previous = tmp_path / "previous.md"
    previous.write_text(DATA_OPEN + "\n" + json.dumps(payload) + "\n-->\n", encoding="utf-8")
    new = tmp_path / "new.md"
    threads = torch.get_num_threads()
    try:
        status = main(["--quick", "--threads", "1", "--only", "s4-kernel", "--previous", str(previous),
                       "--output", str(new), "--fail-on-regression"])
    finally:
        torch.set_num_threads(threads)
    assert status == 2
    report = new.read_text(encoding="utf-8")
    regressions = report[report.index("## Regressions"):report.index(DATA_OPEN)]
    assert "**s4-kernel.forward.ours**" in regressions
    assert "**s4-kernel.forward-backward.ours**" in regressions
    # the sections not re-run are kept from the previous file and say so
    assert "## pgd-cache: " in report
    assert "Carried over from an earlier run" in report


def _section(ours: float, peer: float, rate: float, quick: bool = False) -> Section:
    rows = [Row(key="time", what="t", unit="s", ours=ours, peer=peer, ratio_kind="speedup"),
            Row(key="rate", what="r", unit="images/s", ours=rate)]
    return Section(key="demo", title="demo", command="", rows=rows, quick=quick, threads=1)


def test_an_unknown_section_is_refused_by_the_suite_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--only", "no-such-section"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_checker_flags_only_figures_more_than_15_percent_worse():
    previous = {"demo": _section(ours=1.0, peer=10.0, rate=100.0)}
    slightly = compare_sections([_section(ours=1.10, peer=10.0, rate=90.0)], previous)[0]
    assert slightly == []  # 10% slower, ratio 9.1 vs 10 (9% worse), rate 10% lower: all within 15%
    worse = compare_sections([_section(ours=1.2, peer=10.0, rate=80.0)], previous)[0]
    flagged = {r.figure: round(r.worse_by, 3) for r in worse}
    assert flagged == {"demo.time.ours": 0.2, "demo.time.ratio": round(1 - (10 / 1.2) / 10, 3),
                       "demo.rate.ours": 0.2}
    better = compare_sections([_section(ours=0.5, peer=10.0, rate=200.0)], previous)[0]
    assert better == []
    # one measurement of ours shown against two peers is reported once, each ratio on its own
    twice, again = _section(ours=1.2, peer=10.0, rate=100.0), _section(ours=1.0, peer=10.0, rate=100.0)
    for section in (twice, again):
        section.rows.append(Row(key="time2", what="t", unit="s", ours=section.rows[0].ours, peer=5.0,
                                ratio_kind="speedup"))
    flagged = [r.figure for r in compare_sections([twice], {"demo": again})[0]]
    assert flagged == ["demo.time.ours", "demo.time.ratio", "demo.time2.ratio"]
    # a quick run is never compared with a full one
    regressions, skipped = compare_sections([_section(ours=9.0, peer=1.0, rate=1.0, quick=True)], previous)
    assert regressions == []
    assert "differs in mode" in skipped[0]


def test_targets_and_verdicts():
    row = Row(key="k", what="w", unit="s", ours=0.2, peer=2.98, ratio_kind="speedup",
              targets=[Target("ours", "<=", 0.15, "s"), Target("ratio", ">=", 15)])
    assert row.ratio == pytest.approx(14.9)
    assert row.passed is False
    assert row.verdict() == "**FAIL** (≤ 0.15 s, ≥ 15x)"
    row.ours, row.peer = 0.1, 2.0
    assert row.passed is True
    assert row.verdict() == "pass"
    overhead = Row(key="o", what="w", unit="s", ours=1.06, peer=1.0, ratio_kind="overhead",
                   targets=[Target("ratio", "<=", 1.05)])
    assert overhead.passed is False


def test_measure_reports_median_of_the_timed_runs_only():
    calls = []
    timing = measure(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert timing.repeats == 3
    assert len(timing.cpu_samples) == 3
    assert timing.median == sorted(timing.samples)[1]


def test_interleaved_turns_settle_each_contender_before_its_timed_call():
    order = []
    timings = measure_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=2,
                                  warmup=1, memory=False, settle=1)
    # warm-ups a, b; turn 1: a (settle) a (timed) b b; turn 2 starts with b
    assert order == ["a", "b", "a", "a", "b", "b", "b", "b", "a", "a"]
    assert all(t.repeats == 2 for t in timings.values())


def test_naive_cauchy_peer_computes_the_same_kernel():
    from ssm_models.s4 import NPLRKernel

    torch.manual_seed(0)
    module = NPLRKernel(4, 8, 32, disc="bilinear").double()
    with torch.no_grad():
        ours, peer = module.cauchy_kernel(), naive_nplr_kernel(module)  # (H, T)
    assert ours.shape == peer.shape == (4, 32)
    assert torch.allclose(ours, peer, rtol=0, atol=1e-9 * float(ours.abs().max()))
