"""Criterion 7 of ``embcache check``: memory stays within limits.

Two caches with a small memory budget, one taking vectors of mixed dimensions
and one with a fixed dimension, are each fed :attr:`CheckConfig.limit_fill_factor`
times their budget under new keys. After every put the accounted memory must
be within the budget; the fixed-dimension cache may allocate at most
:data:`ALLOCATED_SLACK_BYTES` beyond it; and the process's resident memory
must grow by a bounded amount, and not at all once the caches are full.
"""

from __future__ import annotations

import asyncio
import gc
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, EmbeddingCache
from embcache.cli.measure import rss_bytes
from embcache.cli.report import Check, Criterion, fmt_bytes
from embcache.cli.workloads import CheckConfig

__all__ = [
    "ALLOCATED_SLACK_BYTES",
    "RSS_SLACK_BYTES",
    "RSS_STEADY_BYTES",
    "criterion_memory_limits",
]

Vector = npt.NDArray[np.float32]
MIB = 2**20

# "Small fixed overhead" allowed above the budget for the bytes a
# single-dimension cache allocates (tables and slab headers). Process RSS may
# exceed what the caches allocate: slabs of a mixed-dimension cache grow by
# realloc and the allocator keeps freed blocks resident (about 1.6x the budget
# was seen), hence 2x the budgets plus 16 MiB for interpreter and numpy noise.
# Once the caches are full, further puts must not grow RSS (boundedness proper).
ALLOCATED_SLACK_BYTES = 4096
RSS_SLACK_BYTES = 16 * 2**20
RSS_STEADY_BYTES = 4 * 2**20


MIXED_DIMS = (64, 128, 384, 768, 1536, 3072)
"""The dimensions the mixed-dimension cache takes, besides the run's own."""
MIN_ENTRIES = 16
"""The fewest of the largest vectors a budget must hold, so that filling it
evicts by the policy rather than by a single vector nearly filling the cache."""


def entry_bytes(dim: int) -> int:
    """What one entry of `dim` float32 costs in a cache's accounting."""
    return dim * 4 + ENTRY_OVERHEAD_BYTES


def limit_budget_mb(cfg: CheckConfig) -> float:
    """The budget (MB) of both caches: the configured one, raised to a whole
    number of MiB holding :data:`MIN_ENTRIES` of the largest vector at large dims."""
    need = MIN_ENTRIES * entry_bytes(max(cfg.dim, *MIXED_DIMS)) / MIB
    return max(cfg.limit_budget_mb, float(math.ceil(need)))


def describe(cfg: CheckConfig) -> str:
    """The criterion in a user's words."""
    return (
        f"two caches with a {limit_budget_mb(cfg):g} MB budget (one taking vectors of mixed "
        f"dimensions, one fixed at {cfg.dim}) are fed {cfg.limit_fill_factor}x their budget "
        "(counting each entry as its vector's bytes plus the documented per-entry overhead); "
        "after every put the accounted memory is within the budget and old entries were "
        f"evicted, the fixed-dimension cache allocates at most {fmt_bytes(ALLOCATED_SLACK_BYTES)} "
        "over its budget, and the process's resident memory grows by at most twice the budgets "
        f"plus {fmt_bytes(RSS_SLACK_BYTES)}, and by at most {fmt_bytes(RSS_STEADY_BYTES)} once "
        "the caches are full"
    )


@dataclass
class _LimitRun:
    """What one over-filled cache did."""

    puts: int = 0
    pushed_bytes: int = 0
    budget: int = 0
    max_used: int = 0
    over_budget: int = 0
    max_allocated: int = 0
    max_size: int = 0
    evictions: int = 0
    dims: tuple[int, ...] = ()


async def _overfill(
    cache: EmbeddingCache, vectors: list[Vector], more_bytes: int, run: _LimitRun
) -> None:
    """Put vectors (cycling through `vectors`) under new keys until `more_bytes`
    more went in (each put counting as the entry's accounted bytes), checking the
    accounting after every put; accumulates into `run`."""
    run.budget = (await cache.get_cache_info()).memory_budget_bytes
    target = run.pushed_bytes + more_bytes
    n_vec = len(vectors)
    i = run.puts
    while run.pushed_bytes < target:
        vec = vectors[i % n_vec]
        await cache.put(CacheKey(f"limit_{i}", "limits-v1", None), vec)
        info = await cache.get_cache_info()
        run.puts += 1
        run.pushed_bytes += vec.nbytes + ENTRY_OVERHEAD_BYTES
        run.max_used = max(run.max_used, info.memory_usage_bytes)
        run.max_allocated = max(run.max_allocated, info.allocated_bytes)
        run.max_size = max(run.max_size, info.size)
        if info.memory_usage_bytes > info.memory_budget_bytes:
            run.over_budget += 1
        i += 1
    last = await cache.get_cache_info()
    run.evictions = last.evictions
    run.dims = last.dims


@dataclass
class _LimitsResult:
    """Both over-filled caches and the process RSS around them."""

    mixed: _LimitRun
    fixed: _LimitRun
    rss_growth: int
    """RSS at the end minus RSS before the caches were made."""
    rss_second_half: int
    """RSS growth over the second half of the puts (caches already full)."""
    budgets: int


async def _memory_limits(cfg: CheckConfig) -> _LimitsResult:
    """Over-fill a mixed-dimension cache and a fixed-dimension one, each with
    `limit_fill_factor` times its budget, in two halves, reading the process
    RSS before, between the halves and at the end (both caches alive)."""
    rng = np.random.default_rng(7)
    dims = sorted({*MIXED_DIMS, cfg.dim})
    mixed_vectors = [rng.standard_normal(d).astype(np.float32) for d in dims for _ in range(4)]
    order = rng.permutation(len(mixed_vectors))
    mixed_vectors = [mixed_vectors[int(j)] for j in order]
    fixed_vectors = [rng.standard_normal(cfg.dim).astype(np.float32) for _ in range(16)]
    budget_mb = limit_budget_mb(cfg)
    half = int(budget_mb * MIB) * cfg.limit_fill_factor // 2
    gc.collect()
    rss0 = rss_bytes()
    mixed = EmbeddingCache(10**7, 3600, budget_mb)
    fixed = EmbeddingCache(10**7, 3600, budget_mb, dim=cfg.dim)
    run_mixed, run_fixed = _LimitRun(), _LimitRun()
    await _overfill(mixed, mixed_vectors, half, run_mixed)
    await _overfill(fixed, fixed_vectors, half, run_fixed)
    gc.collect()
    rss_mid = rss_bytes()
    await _overfill(mixed, mixed_vectors, half, run_mixed)
    await _overfill(fixed, fixed_vectors, half, run_fixed)
    gc.collect()
    rss_end = rss_bytes()
    del mixed, fixed
    return _LimitsResult(
        run_mixed, run_fixed, rss_end - rss0, rss_end - rss_mid, run_mixed.budget + run_fixed.budget
    )


def criterion_memory_limits(cfg: CheckConfig) -> Criterion:
    """Criterion 7: accounted bytes never above budget, allocated bytes of a
    single-dimension cache within budget + small slack, bounded RSS growth."""
    res = asyncio.run(_memory_limits(cfg))
    mixed, fixed = res.mixed, res.fixed
    c = Criterion(7, "memory stays within limits", describe(cfg))
    for name, run in (("mixed dims", mixed), (f"dim {cfg.dim}", fixed)):
        c.checks.append(
            Check(
                f"{name}: max used",
                f"<= budget {fmt_bytes(run.budget)}",
                f"{fmt_bytes(run.max_used)}, {run.over_budget} over",
                run.over_budget == 0 and run.max_used <= run.budget and run.evictions > 0,
                run.max_used,
                run.budget,
                "bytes",
            )
        )
    alloc_limit = fixed.budget + ALLOCATED_SLACK_BYTES
    c.checks.append(
        Check(
            f"dim {cfg.dim}: max allocated",
            f"<= budget + {fmt_bytes(ALLOCATED_SLACK_BYTES)}",
            f"{fmt_bytes(fixed.max_allocated)} ({fixed.max_allocated - fixed.budget:+,} B)",
            fixed.max_allocated <= alloc_limit,
            fixed.max_allocated,
            alloc_limit,
            "bytes",
        )
    )
    rss_limit = 2 * res.budgets + RSS_SLACK_BYTES
    c.checks.append(
        Check(
            "RSS growth, whole run",
            f"<= 2 budgets + {fmt_bytes(RSS_SLACK_BYTES)}",
            fmt_bytes(res.rss_growth),
            res.rss_growth <= rss_limit,
            res.rss_growth,
            rss_limit,
            "bytes",
        )
    )
    c.checks.append(
        Check(
            "RSS growth once full",
            f"<= {fmt_bytes(RSS_STEADY_BYTES)}",
            fmt_bytes(res.rss_second_half),
            res.rss_second_half <= RSS_STEADY_BYTES,
            res.rss_second_half,
            RSS_STEADY_BYTES,
            "bytes",
        )
    )
    c.details = {
        name: {
            "puts": run.puts,
            "pushed_bytes": run.pushed_bytes,
            "budget_bytes": run.budget,
            "max_memory_usage_bytes": run.max_used,
            "puts_over_budget": run.over_budget,
            "max_allocated_bytes": run.max_allocated,
            "max_size": run.max_size,
            "evictions": run.evictions,
            "dims_at_end": list(run.dims),
        }
        for name, run in (("mixed_dims", mixed), ("fixed_dim", fixed))
    }
    c.details["rss_growth_bytes"] = res.rss_growth
    c.details["rss_limit_bytes"] = rss_limit
    c.details["rss_growth_second_half_bytes"] = res.rss_second_half
    c.details["rss_note"] = (
        "RSS includes allocator slack: a mixed-dimension cache grows one slab per "
        "dimension by realloc, and freed blocks may stay resident"
    )
    return c
