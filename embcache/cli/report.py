"""What ``embcache check`` measured, and how it is shown: the report's data
(checks, criteria, comparison figures), the comparison tables (the criteria table:
criteria_table.py; the layout both use: text.py), the JSON form, the
progress lines and the number formats shared by the criteria."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TextIO, Union

from embcache.cli.criteria_table import format_criteria, format_result
from embcache.cli.text import WIDTH, prose, table
from embcache.cli.workloads import CheckConfig

__all__ = [
    "Check",
    "Comparison",
    "Criterion",
    "Figure",
    "Progress",
    "Report",
    "fmt_bytes",
    "fmt_int",
    "fmt_seconds",
    "format_report",
    "report_to_json",
    "verdict",
    "WIDTH",
]

Number = Union[int, float]
MIB = 2**20


def verdict(passed: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if passed else "FAIL"


def fmt_int(x: Number) -> str:
    """An integer with thousands separators."""
    return f"{int(round(x)):,}"


def fmt_seconds(s: float) -> str:
    """Seconds, with units that keep small values readable."""
    if s >= 1.0:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_bytes(n: Number) -> str:
    """Bytes, in B, KiB or MiB."""
    if abs(n) >= MIB:
        return f"{n / MIB:.2f} MiB"
    if abs(n) >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{int(n)} B"


# --- data ---------------------------------------------------------------------------


@dataclass
class Check:
    """One measured quantity against its threshold."""

    label: str
    threshold: str
    measured: str
    passed: bool
    value: Any = None
    limit: Any = None
    unit: str = ""
    not_applicable: str | None = None
    """Why this check cannot be meaningful in this run (e.g. at this dimension),
    in plain words; such a check shows "n/a", and does not fail its criterion."""

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or n/a for a check that does not apply to this run."""
        return "n/a" if self.not_applicable is not None else verdict(self.passed)

    @property
    def counts(self) -> bool:
        """True when this check passed or does not apply."""
        return self.not_applicable is not None or self.passed

    def as_dict(self) -> dict[str, Any]:
        """JSON form of this check."""
        return {
            "label": self.label,
            "threshold": self.threshold,
            "measured": self.measured,
            "verdict": self.verdict,
            "passed": self.passed,
            "applicable": self.not_applicable is None,
            "not_applicable_reason": self.not_applicable,
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
        }


@dataclass
class Criterion:
    """A pass/fail criterion: one or more checks, all must pass."""

    number: int
    name: str
    description: str = ""
    """What is measured and what passes, in a user's words."""
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every check of this criterion passed or does not apply."""
        return all(c.counts for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """JSON form of this criterion."""
        return {
            "number": self.number,
            "name": self.name,
            "description": self.description,
            "verdict": verdict(self.passed),
            "passed": self.passed,
            "checks": [c.as_dict() for c in self.checks],
            "details": self.details,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Figure:
    """One comparison figure: embcache's value, each peer's, and the goal."""

    key: str
    label: str
    unit: str
    embcache: float
    peers: dict[str, float]
    goal: float
    goal_kind: str
    """"ratio": embcache / best peer <= goal; "absolute": embcache <= goal;
    "minimum": embcache >= goal; "info": no goal."""
    detail: dict[str, Any] = field(default_factory=dict)
    meaning: str = ""
    """What the figure measures, in a user's words (the goal is added to it)."""
    cache: str = ""
    """Which embcache cache was measured: "default" (dim not given), "dim=N", or
    "" when the figure does not tell them apart."""

    @property
    def best_peer(self) -> str | None:
        """The peer with the lowest value, or None without peers."""
        if not self.peers:
            return None
        return min(self.peers, key=lambda name: self.peers[name])

    @property
    def ratio(self) -> float | None:
        """embcache / best peer, or None when there is nothing to compare."""
        best = self.best_peer
        if best is None or self.peers[best] <= 0:
            return None
        return self.embcache / self.peers[best]

    @property
    def goal_met(self) -> bool | None:
        """Whether the performance goal is met (None: not measurable here)."""
        if self.goal_kind == "absolute":
            return self.embcache <= self.goal
        if self.goal_kind == "minimum":
            return self.embcache >= self.goal
        if self.goal_kind == "info":
            return None
        ratio = self.ratio
        return None if ratio is None else ratio <= self.goal

    @property
    def goal_text(self) -> str:
        """The goal in words ("" for an informational figure)."""
        unit = {"ns": " ns", "ns/op": " ns", "bytes": " bytes", "%": "%"}.get(self.unit, "")
        if self.goal_kind == "ratio":
            return f"at most {self.goal:.2f}x the fastest peer's time"
        if self.goal_kind == "absolute":
            return f"at most {self.goal:,.0f}{unit}"
        if self.goal_kind == "minimum":
            return f"at least {self.goal:,.0f}{unit}"
        return ""

    def as_dict(self) -> dict[str, Any]:
        """JSON form of this figure."""
        met = self.goal_met
        return {
            "key": self.key,
            "label": self.label,
            "cache": self.cache,
            "meaning": self.meaning,
            "unit": self.unit,
            "embcache": round(self.embcache, 2),
            "peers": {k: round(v, 2) for k, v in self.peers.items()},
            "best_peer": self.best_peer,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "goal": self.goal,
            "goal_kind": self.goal_kind,
            "goal_text": self.goal_text,
            "goal_verdict": "n/a" if met is None else verdict(met),
            "detail": self.detail,
        }


@dataclass
class Comparison:
    """Side-by-side figures of embcache and the installed peers."""

    dim: int
    ops: int
    repeats: int
    peers: list[str]
    missing_peers: list[str]
    figures: list[Figure]
    method: str
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        """JSON form of the comparison."""
        return {
            "dim": self.dim,
            "ops_per_run": self.ops,
            "repeats": self.repeats,
            "statistic": "best of repeats (ns/op); all samples in each figure's detail",
            "peers": self.peers,
            "missing_peers": self.missing_peers,
            "method": self.method,
            "notes": self.notes,
            "goals_affect_exit_code": False,
            "figures": [f.as_dict() for f in self.figures],
        }


@dataclass
class Report:
    """Everything one ``embcache check`` run measured."""

    config: CheckConfig
    criteria: list[Criterion]
    machine: dict[str, Any]
    comparison: Comparison | None = None
    seconds: float = 0.0
    snapshot: dict[str, Any] | None = None
    """Snapshot bandwidth beside dd's (embcache.cli.snapshot_bandwidth); informational."""

    @property
    def passed(self) -> bool:
        """True when every criterion passed (comparison goals do not count)."""
        return all(c.passed for c in self.criteria)


class Progress:
    """Progress lines on a stream (stderr): one per step, or one overwritten
    line when the stream is a terminal. ``None`` stream: silent."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._tty = bool(stream is not None and stream.isatty())
        self._dirty = False

    def step(self, text: str) -> None:
        """Announce that the step described by `text` is starting."""
        if self._stream is None:
            return
        if self._tty:
            self._stream.write("\r\x1b[K" + text + " ...")
            self._dirty = True
        else:
            self._stream.write(text + " ...\n")
        self._stream.flush()

    def done(self) -> None:
        """Clear the overwritten line, if any."""
        if self._stream is not None and self._tty and self._dirty:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._dirty = False


# --- text (the criteria's part: criteria_table.py) -----------------------------------


def _fmt_figure(x: float, fine: bool) -> str:
    """A comparison value: one decimal for small ns/bytes figures, else whole."""
    return f"{x:,.1f}" if fine and abs(x) < 100 else f"{x:,.0f}"


def _goal_cells(f: Figure) -> list[str]:
    """The goal and its verdict: met / MISSED ("n/a": nothing to compare)."""
    if f.goal_kind == "ratio":
        goal = f"<= {f.goal:.2f}"
    elif f.goal_kind == "absolute":
        goal = f"<= {f.goal:,.0f}"
    elif f.goal_kind == "minimum":
        goal = f">= {f.goal:,.0f}"
    else:
        return ["-", ""]
    met = f.goal_met
    return [goal, "n/a" if met is None else ("met" if met else "MISSED")]


def _ratio_cell(f: Figure) -> str:
    ratio = f.ratio
    return "-" if ratio is None else f"{ratio:.2f}"


def _format_comparison(cmp: Comparison, width: int | None) -> list[str]:
    """The side-by-side tables (against the in-process peers, embcache's cache
    as users build it beside a fixed-dim one; against one peer each; absolute
    goals), the goals in words, the notes and the goals' verdict."""
    peer_rows = [f for f in cmp.figures if f.goal_kind == "ratio" and f.cache]
    single_rows = [f for f in cmp.figures if f.goal_kind == "ratio" and not f.cache]
    other_rows = [f for f in cmp.figures if f.goal_kind != "ratio"]
    peers = [p for p in cmp.peers if any(p in f.peers for f in peer_rows)]
    out = [
        "",
        *prose(
            f"comparison at dim {cmp.dim}: ns per operation unless noted, lower is better; "
            f"{cmp.ops:,} random-order keys per run, best of {cmp.repeats} interleaved rounds "
            "(how: see the notes below)",
            width,
            0,
        ),
    ]
    if peer_rows:
        rows = []
        previous = None
        for f in peer_rows:
            same = previous is not None and previous.label == f.label
            cells = ["" if same else f.label, f.cache, _fmt_figure(f.embcache, False)]
            cells += [
                "" if same else (_fmt_figure(f.peers[p], False) if p in f.peers else "-")
                for p in peers
            ]
            rows.append([*cells, _ratio_cell(f), *_goal_cells(f)])
            previous = f
        out += [
            "",
            *prose(
                "against the fastest peer (ratio = embcache / fastest peer; default = the "
                "cache as users build it, dim not given):",
                width,
            ),
            *table(
                ["figure", "cache", "embcache", *peers, "ratio", "goal", "met?"],
                rows,
                set(range(2, 4 + len(peers))),
                width,
            ),
        ]
    if single_rows:
        rows = []
        for f in single_rows:
            best = f.best_peer
            rows.append(
                [
                    f.label,
                    _fmt_figure(f.embcache, False),
                    best or "-",
                    "-" if best is None else _fmt_figure(f.peers[best], False),
                    _ratio_cell(f),
                    *_goal_cells(f),
                ]
            )
        out += [
            "",
            "against one peer each (ratio = embcache / that peer):",
            *table(
                ["figure", "embcache", "peer", "peer's", "ratio", "goal", "met?"],
                rows,
                {1, 3, 4},
                width,
            ),
        ]
    if other_rows:
        rows = []
        for f in other_rows:
            fine = f.unit in ("ns", "bytes", "%")
            rows.append([f.label, _fmt_figure(f.embcache, fine), f.unit, *_goal_cells(f)])
        out += [
            "",
            "embcache alone:",
            *table(["figure", "embcache", "unit", "goal", "met?"], rows, {1}, width),
        ]
    goals: list[str] = []
    said: set[str] = set()
    for f in cmp.figures:
        if f.goal_kind != "info" and f.meaning and f.label not in said:
            said.add(f.label)
            goals += prose(f"  {f.label}: {f.meaning}; goal: {f.goal_text}.", width)
    notes = [line for n in cmp.notes for line in prose(f"note: {n}", width, 6)]
    judged = [f for f in cmp.figures if f.goal_met is not None]
    missed = [f for f in judged if not f.goal_met]
    summary = f"GOALS: {len(judged) - len(missed)} of {len(judged)} met"
    if missed:
        summary += f", {len(missed)} MISSED: " + "; ".join(
            f"{f.label}{f' ({f.cache})' if f.cache else ''} "
            + (
                f"{f.ratio:.2f}x"
                if f.goal_kind == "ratio" and f.ratio is not None
                else _fmt_figure(f.embcache, True)
            )
            for f in missed
        )
    return [
        *out,
        "",
        "performance goals (reported only: they never change the exit code):",
        *goals,
        "",
        *notes,
        "",
        "the performance goals' verdict (reported only; the exit code ignores it):",
        *prose(summary, width),
    ]


def format_report(report: Report, width: int | None = WIDTH) -> str:
    """The human-readable report: the criteria table, the snapshot section and,
    if measured, the comparison with its goals' verdict; then, last, the
    criteria's verdict (RESULT). Every line fits in `width` columns (None: no
    wrapping) but a word longer than that."""
    lines = format_criteria(report, width)
    if report.snapshot is not None:
        from embcache.cli.snapshot_bandwidth import format_snapshot

        lines += format_snapshot(report.snapshot, width)
    if report.comparison is not None:
        lines += _format_comparison(report.comparison, width)
    lines += format_result(report, width)
    return "\n".join(lines) + "\n"


def report_to_json(report: Report) -> dict[str, Any]:
    """Everything in the report as JSON-serialisable data."""
    return {
        "tool": "embcache check",
        "passed": report.passed,
        "verdict": verdict(report.passed),
        "exit_code": 0 if report.passed else 1,
        "seconds": round(report.seconds, 3),
        "config": report.config.as_dict(),
        "machine": report.machine,
        "criteria": [c.as_dict() for c in report.criteria],
        "comparison": None if report.comparison is None else report.comparison.as_dict(),
        "snapshot": report.snapshot,
    }
