"""The criteria part of the ``embcache check`` report: the table of the seven
criteria (one line per criterion, one per check under it), what each criterion
measures, the scaling detail, and the closing verdict (RESULT)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from embcache.cli.text import prose, table

if TYPE_CHECKING:
    from embcache.cli.report import Criterion, Report

__all__ = ["format_criteria", "format_result"]

CHECK_INDENT = "  "
"""A check's label sits this far right of its criterion's name."""


def _format_scaling(crit: Criterion, width: int | None) -> list[str]:
    """The per-worker-count table of the concurrent-access criterion."""
    d = crit.details
    workers = list(d["asyncio_ns_per_op"])
    srows = [
        ["asyncio tasks", *(f"{d['asyncio_ns_per_op'][w]:,.0f}" for w in workers)],
        ["OS threads", *(f"{d['threads_ns_per_op'][w]:,.0f}" for w in workers)],
    ]
    text = (
        f"concurrent access: ns per op, median of {d['rounds']['asyncio']} (tasks) / "
        f"{d['rounds']['threads']} (threads) rounds; each worker puts a new key, then gets it, "
        f"{d['ops_per_worker']['asyncio']} ops per asyncio task, "
        f"{d['ops_per_worker']['threads']} per OS thread (OS threads share one "
        f"SyncEmbeddingCache). Linear scaling = flat per-op cost; "
        f"the {d['factor']:.0f}x bound leaves room for fixed per-round costs and scheduler "
        "noise, and still catches contention that grows with the number of workers."
    )
    return [
        "",
        *prose(text, width, 0),
        *table(["workers", *workers], srows, set(range(1, len(workers) + 1)), width),
    ]


def format_criteria(report: Report, width: int | None) -> list[str]:
    """The criteria table, what each criterion means and the scaling detail (the
    verdict comes last in the report: :func:`format_result`). Each criterion is
    one row (its number, name and verdict), each of its checks one row under it
    (label, threshold, measured, verdict); labels are short, and what they
    stand for is the prose under the table."""
    rows: list[list[str]] = []
    for crit in report.criteria:
        rows.append([str(crit.number), crit.name, "", "", "PASS" if crit.passed else "FAIL"])
        for chk in crit.checks:
            rows.append(["", CHECK_INDENT + chk.label, chk.threshold, chk.measured, chk.verdict])
    cfg = report.config
    out = [
        f"embcache check: does embcache meet its criteria on this machine? (dim {cfg.dim}"
        f"{', quick' if cfg.quick else ''})",
        "",
        *table(["#", "criterion", "threshold", "measured", "verdict"], rows, set(), width),
        "",
        "what each criterion measures:",
    ]
    for crit in report.criteria:
        out += prose(f"{crit.number:>2} {crit.name}: {crit.description}", width, 3)
    not_applicable = [
        (crit.number, chk)
        for crit in report.criteria
        for chk in crit.checks
        if chk.not_applicable is not None
    ]
    if not_applicable:
        out += ["", f"not applicable at dim {cfg.dim} (n/a does not fail the run):"]
        for n, chk in not_applicable:
            out += prose(f"{n:>2} {chk.label}: {chk.not_applicable}", width, 3)
    scaling = next((c for c in report.criteria if "asyncio_ns_per_op" in c.details), None)
    if scaling is not None:
        out += _format_scaling(scaling, width)
    return out


def format_result(report: Report, width: int | None) -> list[str]:
    """The last lines: the criteria's verdict, which alone sets the exit code."""
    failed = [str(c.number) for c in report.criteria if not c.passed]
    n = len(report.criteria)
    if failed:
        result = f"RESULT: FAIL ({n - len(failed)}/{n} criteria pass; failed: {', '.join(failed)})"
    else:
        result = f"RESULT: PASS ({n}/{n} criteria pass)"
    return [
        "",
        "=" * min(width or 72, 72),
        f"the {n} criteria (they alone decide the exit code):",
        result,
        f"(criteria measured in {report.seconds:.1f} s)",
    ]
