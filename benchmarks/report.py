"""BENCHMARKS.md: machine facts, the results table, one part per section, regressions, and an embedded JSON block."""
from __future__ import annotations

import json
import re
from pathlib import Path

from .results import RATIO_KINDS, REGRESSION_THRESHOLD, Regression, Row, Section

DATA_OPEN = "<!-- BENCHMARK-DATA v1"
DATA_CLOSE = "-->"
_DATA_RE = re.compile(re.escape(DATA_OPEN) + r"\s*(\{.*\})\s*" + re.escape(DATA_CLOSE), re.DOTALL)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"
    return f"{value:,.4g} {unit}"


def format_ratio(row: Row) -> str:
    ratio = row.ratio
    return "—" if ratio is None else f"{ratio:.3g} ({RATIO_KINDS[row.ratio_kind][0]})"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def results_table(rows: list[tuple[str, Row]], with_details: bool) -> list[str]:
    head = ["section", "what", "ours", "peer", "ratio", "target", "result"] if not with_details else \
        ["what", "ours", "peer", "ratio", "target", "result", "ours, CPU time", "repeats", "peak memory"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for section_key, row in rows:
        peer = format_value(row.peer, row.unit) + (f" ({row.peer_name})" if row.peer_name and row.peer is not None
                                                   else "")
        cells = [row.what, format_value(row.ours, row.unit), peer, format_ratio(row),
                 "; ".join(t.label() for t in row.targets) or "—", row.verdict()]
        if with_details:
            cells += [format_value(row.ours_cpu, "s"), row.repeats or "—", row.memory or "—"]
        else:
            cells = [section_key] + cells
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def render(machine: dict, sections: list[Section], regressions: list[Regression], skipped: list[str],
           fresh: set[str], invocation: str) -> str:
    """The whole BENCHMARKS.md; `fresh` holds the keys of sections measured in this run (others are carried over)."""
    load_start = "/".join(f"{v:g}" for v in machine.get("load_average_start", [])) or "unknown"
    load_end = "/".join(f"{v:g}" for v in machine.get("load_average_end", [])) or "unknown"
    packages = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items())
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m benchmarks` (the suite in `benchmarks/`); do not edit by hand. Every figure is the",
        "median of repeated runs after an untimed warm-up, unless its row says otherwise. **This machine may be",
        "shared**: when other jobs (training runs, tests) run, absolute times carry the load average stated with",
        "each section (one process of our own gives about 1); ratios against a peer measured in the same run, back to",
        "back, travel much better than absolute times.",
        "`python -m benchmarks --only SECTION` re-runs one section and keeps the others from the previous file.",
        "",
        "Runs use one torch thread unless `--threads N` says otherwise: while other jobs occupy the cores, extra",
        "OpenMP threads wait on each other, which made timings several times slower and far noisier here (compare",
        "`--only pgd-cache --threads 2`). Section tables also give our median CPU time: with one thread it is about",
        "the wall time on an idle machine, and the better guide to absolute targets when the load average is high.",
        "",
        f"Last run: `{invocation}`",
        "",
        "## Machine",
        "",
        "| fact | value |",
        "|---|---|",
        f"| CPU | {machine.get('cpu', 'unknown')} |",
        f"| vector extensions | {', '.join(machine.get('cpu_flags', [])) or 'unknown'} |",
        f"| cores | {machine.get('logical_cores')} logical, {machine.get('usable_cores')} usable by this process |",
        f"| torch | {machine.get('torch_version')}, {machine.get('torch_threads')} thread(s) "
        "(`torch.set_num_threads`) |",
        f"| memory allocator | {machine.get('allocator', 'C library defaults (not recorded)')} "
        "(`ssm_lab.allocator.keep_freed_memory`, as `ssm-lab` and the app run) |",
        f"| python | {machine.get('python')} |",
        f"| load average (1/5/15 min) | {load_start} at the start, {load_end} at the end |",
        f"| started | {machine.get('started_utc')} |",
        f"| peers | {packages} |",
        "",
        "## Results",
        "",
    ]
    all_rows = [(s.key, r) for s in sections for r in s.rows]
    lines += results_table(all_rows, with_details=False)
    failed = sum(1 for _, r in all_rows if r.passed is False)
    with_target = sum(1 for _, r in all_rows if r.passed is not None)
    lines += ["", f"{with_target - failed} of {with_target} targets met."]
    for section in sections:
        lines += ["", *section_part(section, carried=section.key not in fresh)]
    lines += ["", "## Regressions against the previous BENCHMARKS.md", ""]
    lines += regression_lines(regressions, skipped)
    payload = {"machine": machine, "sections": [s.to_dict() for s in sections]}
    lines += ["", DATA_OPEN, _comment_safe_json(payload), DATA_CLOSE, ""]
    return "\n".join(lines)


def section_part(section: Section, carried: bool) -> list[str]:
    load = "/".join(f"{v:g}" for v in section.load_average) or "unknown"
    mode = "quick mode (tiny sizes; not comparable to a full run)" if section.quick else "full sizes"
    origin = "Carried over from an earlier run" if carried else "Measured in this run"
    share = section.cpu_share()
    share_text = "" if share is None else (
        f" During the timed runs this process got {share:.0%} CPU time per wall-clock second "
        f"(about {section.threads * 100}% on an idle machine).")
    lines = [f"## {section.key}: {section.title}", "",
             f"Reproduce: `{section.command}`", "",
             f"{origin}: {section.measured_utc}, {mode}, {section.threads} thread(s), load average at the section's "
             f"start {load}, section wall time {section.seconds:.0f} s.{share_text}", ""]
    lines += results_table([(section.key, r) for r in section.rows], with_details=True)
    if section.notes:
        lines += [""] + [f"- {note}" for note in section.notes]
    return lines


def regression_lines(regressions: list[Regression], skipped: list[str]) -> list[str]:
    lines = [f"A figure (our time or rate, or a ratio) more than {REGRESSION_THRESHOLD:.0%} worse than in the "
             "previous file is listed here, with both runs' load average and CPU share. Absolute times move with "
             "the machine's load, and a CPU share near 100% does not rule the machine out: jobs on the other "
             "logical core still compete for caches and memory bandwidth. Re-run the section before blaming the "
             "code.", ""]
    if regressions:
        lines += [f"- **{r.figure}**: {r.previous:.4g} -> {r.current:.4g} ({r.worse_by:.0%} worse; {r.context})"
                  for r in regressions]
    else:
        lines.append("- none")
    lines += [f"- not compared: {s}" for s in skipped]
    return lines


def _comment_safe_json(payload: dict) -> str:
    # "--" may not appear inside an HTML comment; "\u002d" is the same character to a JSON parser
    return json.dumps(payload, indent=1, sort_keys=True).replace("--", "-\\u002d")


def parse_previous(path: Path) -> tuple[dict, dict[str, Section]]:
    """(machine, {section key: Section}) from an earlier BENCHMARKS.md; empty when absent or unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return {}, {}
    match = _DATA_RE.search(text)
    if match is None:
        return {}, {}
    try:
        payload = json.loads(match.group(1))
        return payload.get("machine", {}), {s["key"]: Section.from_dict(s) for s in payload.get("sections", [])}
    except (ValueError, KeyError, TypeError):
        return {}, {}
