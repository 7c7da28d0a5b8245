"""Command line of the benchmark suite: run sections, compare with the previous BENCHMARKS.md, write the new one."""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import torch

from ssm_lab.allocator import keep_freed_memory

from .harness import load_average, machine_info
from .report import parse_previous, render
from .results import Section, compare_sections
from .sections import SECTIONS
from .sections.common import REPO, Settings, new_section

DEFAULT_OUTPUT = REPO / "BENCHMARKS.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), metavar="SECTION",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and single repeats: checks the machinery")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine a second OpenMP thread "
                             "fights other jobs and makes timings slower and much noisier)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown file to (re)write")
    parser.add_argument("--previous", type=Path, default=None,
                        help="earlier results to compare with and keep unrun sections from (default: --output)")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="exit with status 2 when a figure is more than 15%% worse than in the previous run")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def run_sections(keys: list[str], settings: Settings) -> tuple[list[Section], list[str]]:
    """Run each section; a crash becomes a row-less section naming the error, and the run goes on."""
    done, errors = [], []
    for key in keys:
        print(f"[benchmarks] {key} ...", file=sys.stderr, flush=True)
        try:
            section = SECTIONS[key].run(settings)
        except Exception as error:  # noqa: BLE001 - one broken section must not hide the others' figures
            section = new_section(key, SECTIONS[key].TITLE, settings)
            section.notes.append(f"**The section failed**: {type(error).__name__}: {error}")
            errors.append(f"{key}: {''.join(traceback.format_exception_only(error)).strip()}")
            traceback.print_exc()
        print(f"[benchmarks] {key} done in {section.seconds:.0f} s", file=sys.stderr, flush=True)
        done.append(section)
    return done, errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    allocator = keep_freed_memory()  # before any timing: the suite measures what `ssm-lab` and the app run
    torch.set_num_threads(args.threads)
    settings = Settings(quick=args.quick, threads=args.threads)
    machine = machine_info(allocator)
    _, previous = parse_previous(args.previous or args.output)
    keys = args.only or list(SECTIONS)
    fresh, errors = run_sections([k for k in SECTIONS if k in keys], settings)
    regressions, skipped = compare_sections([s for s in fresh if s.rows], previous)
    fresh_keys = {s.key for s in fresh}
    # sections not re-run stay from the previous file when they were measured the same way
    merged = [next(s for s in fresh if s.key == key) if key in fresh_keys else previous[key]
              for key in SECTIONS
              if key in fresh_keys or (key in previous and previous[key].quick == settings.quick)]
    machine.load_average_end = load_average()
    arguments = " ".join(sys.argv[1:] if argv is None else argv)
    invocation = f".venv/bin/python -m benchmarks {arguments}".strip()
    text = render(machine.to_dict(), merged, regressions, skipped, fresh_keys, invocation)
    args.output.write_text(text, encoding="utf-8")
    for section in fresh:
        for row in section.rows:
            ratio = f"{row.ratio:.3g}" if row.ratio is not None else "-"
            print(f"{section.key:>12} | {row.what} | ours {row.ours:.4g} {row.unit} | ratio {ratio} | "
                  f"{row.verdict()}")
    for reg in regressions:
        print(f"REGRESSION {reg.figure}: {reg.previous:.4g} -> {reg.current:.4g} ({reg.worse_by:.0%} worse)")
    print(f"[benchmarks] wrote {args.output}", file=sys.stderr)
    if errors:
        print("[benchmarks] failed sections:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    return 2 if args.fail_on_regression and regressions else 0
