"""What a section reports (rows with ours, peer, ratio and targets) and the >15% regression check between runs."""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

from .harness import Timing, load_average

REGRESSION_THRESHOLD = 0.15  # a figure more than 15% worse than in the previous BENCHMARKS.md is flagged

# how the ratio column is formed, and which way is better
RATIO_KINDS = {
    "speedup": ("peer / ours", "higher"),  # times: > 1 means we are faster
    "overhead": ("ours / peer", "lower"),  # times: <= 1.05 means at most 5% slower
    "fraction": ("ours / peer", "higher"),  # rates: share of the peer's rate (e.g. of matmul peak)
}
HIGHER_IS_BETTER_UNITS = {"images/s", "GFLOP/s"}
_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass
class Target:
    """`ratio >= 15` or `ours <= 0.15`: the figure it constrains, the comparison and the threshold."""

    on: str  # "ratio" or "ours"
    op: str  # ">=" or "<="
    value: float
    unit: str = "x"

    def label(self) -> str:
        symbol = "≥" if self.op == ">=" else "≤"
        unit = "x" if self.on == "ratio" else f" {self.unit}"
        return f"{symbol} {self.value:g}{unit}"

    def met(self, row: "Row") -> bool | None:
        figure = row.ratio if self.on == "ratio" else row.ours
        return None if figure is None else bool(_OPS[self.op](figure, self.value))


@dataclass
class Row:
    key: str  # stable id within the section, used to match runs
    what: str
    unit: str  # of ours and peer: "s", "images/s", "GFLOP/s"
    ours: float | None
    peer: float | None = None
    peer_name: str = ""
    ratio_kind: str | None = None  # a key of RATIO_KINDS, or None when there is no peer
    targets: list[Target] = field(default_factory=list)
    stretch: list[Target] = field(default_factory=list)  # reported, never a failure
    ours_cpu: float | None = None  # median CPU seconds of ours (shown beside wall time; not a target figure)
    repeats: str = ""  # e.g. "ours 7, peer 3 (median)"
    memory: str = ""  # e.g. "ours +120 MB, peer +900 MB"

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.peer is None or self.ratio_kind is None:
            return None
        if self.ratio_kind == "speedup":
            return self.peer / self.ours if self.ours > 0 else None
        return self.ours / self.peer if self.peer > 0 else None

    @property
    def passed(self) -> bool | None:
        verdicts = [t.met(self) for t in self.targets]
        if not verdicts:
            return None
        return all(v is True for v in verdicts)

    def verdict(self) -> str:
        if not self.targets:
            return "—"
        failed = [t.label() for t in self.targets if t.met(self) is not True]
        text = "pass" if not failed else "**FAIL** (" + ", ".join(failed) + ")"
        for t in self.stretch:
            text += f"; stretch {t.label()}: " + ("met" if t.met(self) else "not met")
        return text

    def figures(self) -> dict[str, tuple[float, str]]:
        """Figures the regression check follows, with the better direction. Peer times are the peers' business."""
        out = {}
        if self.ours is not None:
            out["ours"] = (self.ours, "higher" if self.unit in HIGHER_IS_BETTER_UNITS else "lower")
        if self.ratio is not None:
            out["ratio"] = (self.ratio, RATIO_KINDS[self.ratio_kind][1])
        return out

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k not in ("targets", "stretch")}
        data["targets"] = [t.__dict__ for t in self.targets]
        data["stretch"] = [t.__dict__ for t in self.stretch]
        data["ratio"], data["passed"] = self.ratio, self.passed
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Row":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["targets"] = [Target(**t) for t in data.get("targets", [])]
        fields["stretch"] = [Target(**t) for t in data.get("stretch", [])]
        return cls(**fields)


@dataclass
class Section:
    key: str  # used by --only
    title: str
    command: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_average: list[float] = field(default_factory=load_average)  # at the section's start
    measured_utc: str = ""
    quick: bool = False
    threads: int = 0
    seconds: float = 0.0  # wall time of the whole section
    timings: dict = field(default_factory=dict)  # raw samples per measurement, for the JSON block

    def add_timing(self, name: str, timing: Timing) -> Timing:
        self.timings[name] = timing.to_dict()
        return timing

    def cpu_share(self) -> float | None:
        """This process's CPU seconds over wall seconds across the section's timed runs."""
        timed = [t for t in self.timings.values() if t.get("cpu_samples") and not t.get("scaled_from")]
        cpu, wall = sum(sum(t["cpu_samples"]) for t in timed), sum(sum(t["samples"]) for t in timed)
        return cpu / wall if wall > 0 else None

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["rows"] = [r.to_dict() for r in self.rows]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Section":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["rows"] = [Row.from_dict(r) for r in data.get("rows", [])]
        return cls(**fields)


def memory_text(**peaks: float | None) -> str:
    """'ours +12 MB, peer +340 MB' from peak RSS growths (None: not measured)."""
    parts = [f"{name.replace('_', ' ')} +{mb:.0f} MB" for name, mb in peaks.items() if mb is not None]
    return ", ".join(parts)


@dataclass
class Regression:
    figure: str  # "section.row.ours" or "section.row.ratio"
    previous: float
    current: float
    better: str
    context: str = ""  # the two runs' load and CPU share, to tell code from machine

    @property
    def worse_by(self) -> float:
        """Relative change in the bad direction: 0.2 means 20% worse."""
        if self.better == "lower":
            return (self.current - self.previous) / self.previous
        return (self.previous - self.current) / self.previous


def compare_sections(current: list[Section], previous: dict[str, Section],
                     threshold: float = REGRESSION_THRESHOLD) -> tuple[list[Regression], list[str]]:
    """Figures more than `threshold` worse than the same figure of the previous run, and what was not compared."""
    regressions, skipped = [], []
    for section in current:
        old = previous.get(section.key)
        if old is None:
            skipped.append(f"{section.key}: no previous result")
            continue
        if old.quick != section.quick or old.threads != section.threads:
            skipped.append(f"{section.key}: previous run differs in mode or threads "
                           f"(quick={old.quick}, threads={old.threads})")
            continue
        old_rows = {r.key: r for r in old.rows}
        context = _context(old, section)
        seen = set()  # rows sharing one measurement of ours (e.g. against several peers) report it once
        for row in section.rows:
            if row.key not in old_rows:
                continue
            old_figures = old_rows[row.key].figures()
            for name, (value, better) in row.figures().items():
                if name not in old_figures or old_figures[name][0] <= 0:
                    continue
                if name == "ours":
                    if (old_figures[name][0], value) in seen:
                        continue
                    seen.add((old_figures[name][0], value))
                reg = Regression(f"{section.key}.{row.key}.{name}", old_figures[name][0], value, better, context)
                if reg.worse_by > threshold:
                    regressions.append(reg)
    return regressions, skipped


def _context(old: Section, new: Section) -> str:
    def describe(section: Section) -> str:
        load = f"{section.load_average[0]:g}" if section.load_average else "?"
        share = section.cpu_share()
        return f"load {load}" + ("" if share is None else f", CPU share {share:.0%}")
    return f"{describe(old)} -> {describe(new)}"
