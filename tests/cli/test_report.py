"""The layout of the ``embcache check`` report and how ``--compare`` measures:
tables within 100 columns with one line per row, the goals' verdict (met /
MISSED) apart from the criteria's RESULT, which comes last; the default cache
beside a fixed-dim one, every figure's rounds interleaved, puts of new keys
into brand-new caches; no stray warning from the Redis measurement."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from embcache.cli import compare
from embcache.cli.peers import Loops
from embcache.cli.report import (
    Check,
    Comparison,
    Criterion,
    Figure,
    Report,
    format_report,
)
from embcache.cli.workloads import CheckConfig, comparison_inputs


def _figure(key: str, embcache: float, peers: dict[str, float], cache: str = "") -> Figure:
    g = compare.GOALS[key]
    return Figure(key, g.label, "ns/op", embcache, peers, g.goal, g.kind, {}, "m", cache)


def _report(with_snapshot: bool = True) -> Report:
    peers = {"cachebox": 900.0, "lru-dict": 1000.0, "cachetools": 1500.0}
    figures = []
    for key, default, fixed in [
        ("put_new", 850.0, 280.0),  # missed on the default cache, met with dim
        ("get_hit", 400.0, 380.0),
        ("put_full", 830.0, 600.0),
        ("get_miss", 500.0, 480.0),
        ("batch_get", 1400.0, 300.0),
    ]:
        figures.append(_figure(key, default, peers, "default"))
        figures.append(_figure(f"{key}", fixed, peers, "dim=768"))
    figures.append(_figure("key_create", 300.0, {}))  # missed: at most 250 ns
    redis = Figure(
        "redis_batch_vs_langchain",
        "Redis batch 1,000 vs langchain, per row",
        "ns/row",
        30_000.0,
        {"langchain": 1_200_000.0},
        0.2,
        "ratio",
        {},
        "m",
    )
    figures.append(redis)
    cmp = Comparison(768, 10_000, 7, [*peers, "langchain"], [], figures, "best", ["a note"])
    criteria = [
        Criterion(n, f"criterion {n}", "what it measures", [Check("c", "> 1", "2", True)])
        for n in range(1, 8)
    ]
    snapshot = None
    if with_snapshot:
        snapshot = {
            "mib": 16,
            "dim": 768,
            "entries": 5461,
            "rounds": 1,
            "dropped": False,
            "ops": {},
            "best": {},
        }
    return Report(CheckConfig(), criteria, {}, cmp, 1.0, snapshot)


def _text(report: Report) -> str:
    if report.snapshot is not None:
        from embcache.cli import snapshot_bandwidth

        # the section's own content is tested elsewhere: a marker stands for it
        original = snapshot_bandwidth.format_snapshot
        snapshot_bandwidth.format_snapshot = lambda result, width=None: ["SNAPSHOT SECTION"]
        try:
            return format_report(report)
        finally:
            snapshot_bandwidth.format_snapshot = original
    return format_report(report)


def test_compare_tables_fit_100_columns_one_line_per_row() -> None:
    text = _text(_report())
    assert max(len(line) for line in text.splitlines()) <= 100
    table = text.split("against the fastest peer", 1)[1].split("\n\n", 1)[0].splitlines()
    header = next(line for line in table if line.startswith("figure "))
    for word in ("cache", "embcache", "cachebox", "lru-dict", "cachetools", "ratio", "goal"):
        assert word in header
    rows = table[table.index(header) + 2 :]
    assert len(rows) == 10  # 5 figures x (default, dim=768), no continuation lines
    for row in rows:
        assert row.split()[-1] in ("met", "MISSED"), row
    assert rows[0].startswith("put, new key, fresh cache  default")
    assert rows[0].split()[-1] == "MISSED" and rows[1].split()[-1] == "met"
    assert rows[1].split()[0] == "dim=768"
    # the Redis figure (one peer each) and the absolute goal: one line each too
    redis_row = next(line for line in text.splitlines() if line.startswith("Redis batch 1,000"))
    assert redis_row.split()[-1] == "met" and "langchain" in redis_row
    key_row = next(line for line in text.splitlines() if line.startswith("CacheKey creation"))
    assert key_row.split()[-1] == "MISSED"


def test_goals_verdict_and_result_are_apart_and_result_is_last() -> None:
    text = _text(_report())
    lines = text.splitlines()
    goals = next(i for i, line in enumerate(lines) if line.startswith("GOALS: "))
    result = next(i for i, line in enumerate(lines) if line.startswith("RESULT: "))
    snapshot = lines.index("SNAPSHOT SECTION")
    assert snapshot < goals < result
    assert lines[result] == "RESULT: PASS (7/7 criteria pass)"
    assert "criteria" in lines[result - 1] and "exit code" in lines[result - 1]
    assert set(lines[result - 2]) == {"="}  # a rule between the goals and the result
    assert result >= len(lines) - 2  # only the time after it
    goals_text = " ".join(" ".join(lines[goals : result - 2]).split())
    assert "6 of 12 met, 6 MISSED" in goals_text
    for missed in (
        "put, new key, fresh cache (default) 0.94x",
        "get_many 1,000 keys, /row (default) 1.56x",
        "put, full cache (evicts) (dim=768) 0.67x",
        "CacheKey creation (ns) 300",
    ):
        assert missed in goals_text
    # no PASS/FAIL wording for goals: those words belong to the criteria
    comparison = text.split("comparison at dim", 1)[1].split("RESULT:", 1)[0]
    assert "PASS" not in comparison and "FAIL" not in comparison


def test_failed_criteria_result_is_last_too() -> None:
    report = _report(with_snapshot=False)
    report.criteria[3].checks[0].passed = False
    lines = _text(report).splitlines()
    assert lines[-2] == "RESULT: FAIL (6/7 criteria pass; failed: 4)"


class _Named(dict):  # type: ignore[type-arg]
    """A mapping that knows which contender made it (for the fake loops)."""

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__()
        self.name = name
        self.capacity = capacity

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self and len(self) >= self.capacity:
            del self[next(iter(self))]
        super().__setitem__(key, value)


def test_every_figure_interleaves_contenders_and_put_new_uses_fresh_caches() -> None:
    timed_calls: list[tuple[str, str, int]] = []
    made: list[_Named] = []

    def loops(op: str) -> Any:
        def run(cache: _Named, items: Any) -> None:
            timed_calls.append((op, cache.name, id(cache)))
            if op == "puts":
                for k, v in items:
                    cache[k] = v

        return run

    fake = Loops(loops("puts"), loops("gets"), loops("get_matrix"))

    def factory(name: str) -> Any:
        def new(capacity: int) -> _Named:
            cache = _Named(name, capacity)
            made.append(cache)
            return cache

        return new

    names = ["default", "fixed", "peer"]
    contenders = [compare._Contender(n, factory(n), fake) for n in names]
    inp = comparison_inputs(8, 40)
    repeats = 3
    samples = compare._measure_per_op(contenders, inp, repeats)
    assert list(samples) == list(compare.PER_OP)
    for figure in compare.PER_OP:
        assert all(len(samples[figure][n].per_op_ns) == repeats for n in names)
    rounds = repeats + 1
    # put of a new key comes first: round after round, every contender once per
    # round, each time into a brand-new cache
    first = timed_calls[: 3 * rounds]
    assert [(op, name) for op, name, _ in first] == [("puts", n) for n in names] * rounds
    assert len({cid for _, _, cid in first}) == 3 * rounds
    # gets (hits, then misses) and the batch get: interleaved the same way
    gets = [name for op, name, _ in timed_calls if op == "gets"]
    assert gets == names * rounds * 2
    batch = [name for op, name, _ in timed_calls if op == "get_matrix"]
    assert batch == names * rounds
    # put into a full cache: a fill and a timed put per contender and round
    full = [name for op, name, _ in timed_calls[3 * rounds + 3 :] if op == "puts"]
    assert full == [n for n in names for _ in range(2)] * rounds


def test_compare_measures_default_cache_beside_fixed_dim(monkeypatch: pytest.MonkeyPatch) -> None:
    from embcache.cli import redis_compare

    monkeypatch.setattr(redis_compare, "available_contenders", lambda: [])
    monkeypatch.setattr(compare, "available_peers", lambda: [])
    made: list[int | None] = []
    real = compare.SyncEmbeddingCache

    def spy(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs.get("dim"))
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "SyncEmbeddingCache", spy)
    from embcache.cli.report import Progress

    cmp = compare.run_compare(CheckConfig.make(quick=True, dim=16), Progress(None))
    figures = {(f.key, f.cache) for f in cmp.figures}
    for key in compare.PER_OP:
        assert (key, "default") in figures and (f"{key}_fixed_dim", "dim=16") in figures
    assert None in made and 16 in made
    default_put = next(f for f in cmp.figures if f.key == "put_new")
    assert set(default_put.detail) == {"embcache"}
    assert default_put.as_dict()["cache"] == "default"
    assert any("dim not given" in note for note in cmp.notes)


def test_dead_redis_measurement_prints_no_warning(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("redis")
    from embcache.cli.redis_peers import dead_tier_cache, open_breaker

    async def trip() -> None:
        cache, client = await dead_tier_cache(8, tiered=True)
        try:
            await open_breaker(cache)
            assert cache.tier.get_tier_info().breaker == "open"  # type: ignore[union-attr]
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING):
        asyncio.run(trip())
    assert [r for r in caplog.records if r.name == "embcache.redis"] == []
    assert "Redis skipped" not in capsys.readouterr().err
    # the library's logger is left as it was: its warnings reach handlers again
    logger = logging.getLogger("embcache.redis")
    assert logger.filters == []
    with caplog.at_level(logging.WARNING):
        logger.warning("after the measurement")
    assert [r.getMessage() for r in caplog.records] == ["after the measurement"]


def _criteria_as_recorded() -> list[Criterion]:
    """The seven criteria of a `check` run at dim 768 as the criteria modules
    label them, with wide measured figures (a fast machine's rates, a failed
    and a not-applicable check), so their rows are as wide as they get."""

    def crit(number: int, name: str, *checks: Check) -> Criterion:
        return Criterion(number, name, f"what criterion {number} measures " * 6, list(checks))

    hits = Check("every lookup hits", "= 1,000", "1,000", True)
    return [
        crit(
            1,
            "put throughput",
            Check("1,000 puts of new keys", "> 1,000 ops/s", "12,345,678 ops/s", True),
        ),
        crit(
            2,
            "get throughput",
            Check("1,000 gets (hits)", "> 5,000 ops/s", "12,345,678 ops/s", True),
            hits,
        ),
        crit(
            3,
            "memory estimation accuracy",
            Check(
                "memory_usage_mb / payload",
                "ratio 0.50 .. 1.50",
                "n/a",
                False,
                not_applicable="a vector this small is mostly the per-entry overhead",
            ),
            Check("exact memory_usage_bytes", "= 317,200 B", "317,200 B (exact: yes)", True),
        ),
        crit(
            4,
            "concurrent access scales",
            Check("asyncio tasks, 16 vs 1", "<= 3.0x", "10.77x (1,718 -> 18,554 ns/op)", False),
            Check("OS threads, 16 vs 1", "<= 3.0x", "1.27x (334 -> 426 ns/op)", True),
        ),
        crit(5, "10k-entry insert time", Check("10,000 puts", "< 30 s", "1,026.371 ms", True)),
        crit(
            6,
            "1k lookups on 10k entries",
            Check("1,000 gets (every 10th key)", "< 0.5 s", "1.329 ms", True),
            hits,
            Check("size", "== 10,000", "10,000", True),
            Check("hit rate", "> 0.9", "1.000", True),
        ),
        crit(
            7,
            "memory stays within limits",
            Check("mixed dims: max used", "<= budget 1.00 MiB", "1.00 MiB, 0 over", True),
            Check("dim 768: max used", "<= budget 1.00 MiB", "1022.2 KiB, 0 over", True),
            Check("dim 768: max allocated", "<= budget + 4.0 KiB", "1020.8 KiB (-3,264 B)", True),
            Check("RSS growth, whole run", "<= 2 budgets + 16.00 MiB", "1.97 MiB", True),
            Check("RSS growth once full", "<= 4.00 MiB", "0 B", True),
        ),
    ]


@pytest.mark.parametrize("quick", [False, True])
def test_criteria_table_fits_100_columns_one_line_per_row(quick: bool) -> None:
    criteria = _criteria_as_recorded()
    report = Report(CheckConfig(quick=quick), criteria, {}, None, 1.0, None)
    lines = format_report(report).splitlines()
    assert max(len(line) for line in lines) <= 100
    header = next(i for i, line in enumerate(lines) if line.startswith("#  criterion"))
    assert lines[header].split() == ["#", "criterion", "threshold", "measured", "verdict"]
    rows = lines[header + 2 : lines.index("", header)]
    # one line per criterion and one per check: nothing wraps onto a continuation line
    assert len(rows) == len(criteria) + sum(len(c.checks) for c in criteria)
    at = 0
    for c in criteria:
        assert rows[at].split()[0] == str(c.number) and c.name in rows[at]
        assert rows[at].split()[-1] == ("PASS" if c.passed else "FAIL")
        for k, chk in enumerate(c.checks, at + 1):
            assert rows[k].startswith("     " + chk.label + " ")
            assert chk.threshold in rows[k] and chk.measured in rows[k]
            assert rows[k].split()[-1] == chk.verdict
        at += 1 + len(c.checks)
    assert "RESULT: FAIL (6/7 criteria pass; failed: 4)" in lines
    # --wide: the same rows, and the prose under the table unwrapped
    wide = format_report(report, None).splitlines()
    assert wide[header + 2 : wide.index("", header)] == [r.rstrip() for r in rows]
    assert max(len(line) for line in wide) > 100
