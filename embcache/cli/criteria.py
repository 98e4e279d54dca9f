"""The pass/fail criteria of ``embcache check``, measured on this machine.

Each criterion is measured through embcache's public API: ``EmbeddingCache``
driven by asyncio, and ``SyncEmbeddingCache`` for OS threads. There are seven:

1. put throughput: more than 1,000 stores of new keys per second
2. get throughput: more than 5,000 lookups per second, every one a hit
3. memory estimation accuracy: reported memory within +-50% of the vectors'
   bytes, and the accounting exact
4. concurrent access scales: per-op cost at 16 workers <= 3x that at 1 worker,
   for asyncio tasks and for OS threads (embcache.cli.concurrency)
5. 10,000 stores of new keys take less than 30 s
6. 1,000 lookups on those 10,000 entries take less than 0.5 s, all hits
7. memory stays within limits: accounted bytes, allocated bytes, process RSS
   (embcache.cli.limits)

Keys and vectors are the shared workloads (embcache.cli.workloads). The
criteria alone decide the exit code of ``embcache check``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, EmbeddingCache
from embcache.cli.concurrency import criterion_scaling
from embcache.cli.limits import criterion_memory_limits
from embcache.cli.measure import gc_paused
from embcache.cli.report import Check, Criterion, Progress, fmt_int, fmt_seconds
from embcache.cli.workloads import CheckConfig, budget_mb, workload_key

__all__ = ["CRITERIA", "DESCRIPTIONS", "run_check"]

MIB = 2**20

DESCRIPTIONS: dict[int, str] = {
    1: "stores per second of {dim}-dim vectors under new keys through the asyncio "
    "EmbeddingCache (each key built in the loop, after 1,000 warm-up stores); more than 1,000/s",
    2: "lookups per second of the 1,000 vectors just stored (each returns a new array); "
    "more than 5,000/s, and every lookup finds its vector",
    3: "after storing 100 vectors of {dim} floats, the reported memory_usage_mb is within "
    "+-50% of the vectors' own bytes, and memory_usage_bytes is exactly dim x 4 plus the "
    "documented per-entry overhead ({overhead} B) for each entry",
    5: "storing 10,000 {dim}-dim vectors under new keys into an empty cache takes less than 30 s",
    6: "1,000 lookups spread over those 10,000 entries (every 10th key) take less than 0.5 s, "
    "all of them hit, and the cache then holds 10,000 entries with a hit rate above 0.9",
}
"""Criteria 1-3, 5 and 6 in a user's words ({dim}: the dimension of the run;
{overhead}: ENTRY_OVERHEAD_BYTES);
4 and 7 describe themselves (concurrency.describe, limits.describe)."""


# --- criteria 1 and 2: put / get throughput ------------------------------------------


async def _timed_puts(cache: EmbeddingCache, dim: int) -> int:
    """1000 warm-up puts, then 1000 timed puts of new keys, each key built inside
    the timed loop (as a caller builds it). Returns the timed nanoseconds."""
    embedding = np.full(dim, 0.5, dtype=np.float32)
    for i in range(1000):
        await cache.put(workload_key(i), embedding)
    with gc_paused():
        t0 = time.perf_counter_ns()
        for i in range(1000, 2000):
            await cache.put(workload_key(i), embedding)
        return time.perf_counter_ns() - t0


async def _timed_gets(cache: EmbeddingCache, first: int, count: int, step: int) -> tuple[int, int]:
    """Timed gets of keys first, first+step, ... (count of them), each key built
    inside the timed loop. Returns (nanoseconds, hits)."""
    hits = 0
    with gc_paused():
        t0 = time.perf_counter_ns()
        for i in range(first, first + count * step, step):
            if await cache.get(workload_key(i)) is not None:
                hits += 1
        return time.perf_counter_ns() - t0, hits


def _rate_check(label: str, rate: float, floor: int) -> Check:
    """The check that `rate` (operations per second) is above `floor`."""
    return Check(
        label,
        f"> {fmt_int(floor)} ops/s",
        f"{fmt_int(rate)} ops/s",
        rate > floor,
        round(rate, 1),
        floor,
        "ops/s",
    )


def _criterion_put(cfg: CheckConfig, ctx: dict[str, Any]) -> Criterion:
    """Criterion 1: put throughput in EmbeddingCache(10000, 3600, budget) with a
    budget that holds the 2,000 vectors put at this dim (criterion 2 reads them)."""
    cache = EmbeddingCache(10_000, 3600, budget_mb(2000, cfg.dim))
    ctx["regression_cache"] = cache
    put_ns = asyncio.run(_timed_puts(cache, cfg.dim))
    put_rate = 1000 / (put_ns / 1e9)
    c = Criterion(1, "put throughput", DESCRIPTIONS[1].format(dim=cfg.dim))
    c.checks.append(_rate_check("1,000 puts of new keys", put_rate, 1000))
    c.details = {"elapsed_ns": put_ns, "ops": 1000, "ns_per_op": put_ns / 1000}
    return c


def _criterion_get(cfg: CheckConfig, ctx: dict[str, Any]) -> Criterion:
    """Criterion 2: get throughput, 1000 hits on criterion 1's cache."""
    cache: EmbeddingCache = ctx.pop("regression_cache")
    get_ns, hits = asyncio.run(_timed_gets(cache, 0, 1000, 1))
    get_rate = 1000 / (get_ns / 1e9)
    c = Criterion(2, "get throughput", DESCRIPTIONS[2].format(dim=cfg.dim))
    c.checks.append(_rate_check("1,000 gets (hits)", get_rate, 5000))
    c.checks.append(
        Check("every lookup hits", "= 1,000", fmt_int(hits), hits == 1000, hits, 1000, "hits")
    )
    c.details = {"elapsed_ns": get_ns, "ops": 1000, "ns_per_op": get_ns / 1000}
    return c


# --- criterion 3: memory estimation accuracy ---------------------------------------------


async def _memory_accuracy(dim: int) -> tuple[float, int, int, int]:
    """100 vectors of `dim` into EmbeddingCache(1000, 3600, budget) with room for
    them all. Returns (memory_usage_mb, memory_usage_bytes, entry overhead, size)."""
    cache = EmbeddingCache(1000, 3600, budget_mb(100, dim))
    for i in range(100):
        key = CacheKey(f"memory_test_{i}", "v1", None)
        await cache.put(key, np.full(dim, float(i), dtype=np.float32))
    info = await cache.get_cache_info()
    return info.memory_usage_mb, info.memory_usage_bytes, info.entry_overhead_bytes, info.size


MIN_RATIO_DIM = -(-2 * ENTRY_OVERHEAD_BYTES // 4)
"""The smallest dim at which the +-50% ratio can hold: memory_usage_mb counts the
documented per-entry overhead too, so the ratio is at least
(dim*4 + overhead) / (dim*4), which exceeds 1.5 when dim*4 < 2 x overhead."""


def _ratio_not_applicable(dim: int) -> str | None:
    """Why the +-50% ratio of criterion 3 cannot hold at `dim` (None: it can)."""
    if dim >= MIN_RATIO_DIM:
        return None
    floor = (dim * 4 + ENTRY_OVERHEAD_BYTES) / (dim * 4)
    return (
        f"a {dim}-dim vector is {dim * 4} B and every entry also carries the documented "
        f"{ENTRY_OVERHEAD_BYTES} B overhead, so reported memory is at least {floor:.2f}x the "
        f"vectors' bytes even when exact; the +-50% bound is meaningful from dim "
        f"{MIN_RATIO_DIM} up. The exact-bytes check still verifies the accounting."
    )


def _criterion_memory_accuracy(cfg: CheckConfig) -> Criterion:
    """Criterion 3: memory_usage_mb within +-50% of the payload, and exact bytes."""
    n, dim = 100, cfg.dim
    mb, used, overhead, size = asyncio.run(_memory_accuracy(dim))
    expected_mb = n * dim * 4 / MIB
    ratio = mb / expected_mb
    exact_bytes = n * (dim * 4 + ENTRY_OVERHEAD_BYTES)
    exact = used == exact_bytes and overhead == ENTRY_OVERHEAD_BYTES and size == n
    description = DESCRIPTIONS[3].format(dim=cfg.dim, overhead=ENTRY_OVERHEAD_BYTES)
    c = Criterion(3, "memory estimation accuracy", description)
    c.checks.append(
        Check(
            "memory_usage_mb / payload",
            "ratio 0.50 .. 1.50",
            f"{ratio:.4f} ({mb:.4f} / {expected_mb:.4f} MB)",
            0.5 <= ratio <= 1.5,
            round(ratio, 6),
            [0.5, 1.5],
            "ratio",
            _ratio_not_applicable(dim),
        )
    )
    c.checks.append(
        Check(
            "exact memory_usage_bytes",
            f"= {fmt_int(exact_bytes)} B",
            f"{fmt_int(used)} B (exact: {'yes' if exact else 'no'})",
            exact,
            used,
            exact_bytes,
            "bytes",
        )
    )
    c.details = {
        "memory_usage_mb": mb,
        "expected_payload_mb": expected_mb,
        "memory_usage_bytes": used,
        "expected_exact_bytes": exact_bytes,
        "entry_overhead_bytes": overhead,
        "exact": exact,
    }
    return c


# --- criteria 5 and 6: a 10k-entry dataset ---------------------------------------------


async def _timed_inserts(cache: EmbeddingCache, dim: int) -> int:
    """10k timed puts of new keys (built inside the loop). Returns nanoseconds."""
    embedding = np.full(dim, 0.1, dtype=np.float32)
    with gc_paused():
        t0 = time.perf_counter_ns()
        for i in range(10_000):
            await cache.put(workload_key(i), embedding)
        return time.perf_counter_ns() - t0


def _criterion_insert(cfg: CheckConfig, ctx: dict[str, Any]) -> Criterion:
    """Criterion 5: 10k puts into EmbeddingCache(50000, 3600, budget) in < 30 s,
    the budget holding all 10k vectors at this dim (criterion 6 reads them)."""
    cache = EmbeddingCache(50_000, 3600, budget_mb(10_000, cfg.dim))
    ctx["large_cache"] = cache
    insert_ns = asyncio.run(_timed_inserts(cache, cfg.dim))
    c = Criterion(5, "10k-entry insert time", DESCRIPTIONS[5].format(dim=cfg.dim))
    c.checks.append(
        Check(
            "10,000 puts",
            "< 30 s",
            fmt_seconds(insert_ns / 1e9),
            insert_ns < 30e9,
            insert_ns / 1e9,
            30,
            "s",
        )
    )
    c.details = {"elapsed_ns": insert_ns, "ns_per_put": insert_ns / 10_000}
    return c


def _criterion_lookups(cfg: CheckConfig, ctx: dict[str, Any]) -> Criterion:
    """Criterion 6: 1k gets of every 10th key of criterion 5's cache in < 0.5 s,
    then size == 10,000 and hit rate > 0.9."""
    cache: EmbeddingCache = ctx.pop("large_cache")
    lookup_ns, hits = asyncio.run(_timed_gets(cache, 0, 1000, 10))
    info = cache.sync.get_cache_info()
    size, hit_rate = info.size, info.hit_rate
    c = Criterion(6, "1k lookups on 10k entries", DESCRIPTIONS[6].format(dim=cfg.dim))
    c.checks.append(
        Check(
            "1,000 gets (every 10th key)",
            "< 0.5 s",
            fmt_seconds(lookup_ns / 1e9),
            lookup_ns < 0.5e9,
            lookup_ns / 1e9,
            0.5,
            "s",
        )
    )
    c.checks.append(Check("every lookup hits", "= 1,000", fmt_int(hits), hits == 1000, hits, 1000))
    c.checks.append(Check("size", "== 10,000", fmt_int(size), size == 10_000, size, 10_000))
    c.checks.append(Check("hit rate", "> 0.9", f"{hit_rate:.3f}", hit_rate > 0.9, hit_rate, 0.9))
    c.details = {"elapsed_ns": lookup_ns, "ns_per_get": lookup_ns / 1000}
    return c


# --- the criteria run ---------------------------------------------------------------


CRITERIA: list[tuple[str, Callable[[CheckConfig, dict[str, Any]], Criterion]]] = [
    ("put throughput", _criterion_put),
    ("get throughput", _criterion_get),
    ("memory estimation accuracy", lambda cfg, ctx: _criterion_memory_accuracy(cfg)),
    (
        "concurrent access scales (1-16 asyncio tasks, OS threads)",
        lambda cfg, ctx: criterion_scaling(cfg),
    ),
    ("10k-entry insert time", _criterion_insert),
    ("1k lookups on 10k entries", _criterion_lookups),
    ("memory stays within limits", lambda cfg, ctx: criterion_memory_limits(cfg)),
]
"""The criteria in run order. 2 reads the cache 1 filled, 6 the one 5 filled
(passed along in a shared context)."""


def run_check(cfg: CheckConfig, progress: Progress) -> list[Criterion]:
    """Measure the seven criteria, announcing each on `progress` as it starts."""
    criteria: list[Criterion] = []
    ctx: dict[str, Any] = {}
    for number, (name, measure) in enumerate(CRITERIA, 1):
        progress.step(f"[{number}/{len(CRITERIA)}] {name}")
        t0 = time.perf_counter()
        crit = measure(cfg, ctx)
        crit.seconds = time.perf_counter() - t0
        criteria.append(crit)
    progress.done()
    return criteria
