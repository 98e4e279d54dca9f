"""Criterion 4 of ``embcache check``: concurrent access scales.

1, 2, 4, 8 and 16 workers share one cache, each alternating a put of a new key
and a get of that key: asyncio tasks on one ``EmbeddingCache``, and OS threads
on one ``SyncEmbeddingCache``. The criterion passes when the cost per operation
at 16 workers is at most :data:`SCALING_FACTOR` times the cost at one worker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from statistics import median

import numpy as np

from embcache import CacheKey, EmbeddingCache, SyncEmbeddingCache
from embcache.cli.measure import gc_paused
from embcache.cli.report import Check, Criterion
from embcache.cli.workloads import CheckConfig, budget_mb, workload_key

__all__ = [
    "OPS_PER_THREAD",
    "OPS_PER_WORKER",
    "SCALING_FACTOR",
    "WORKER_COUNTS",
    "criterion_scaling",
]

WORKER_COUNTS = (1, 2, 4, 8, 16)
OPS_PER_WORKER = 100
# OS threads do 1000 ops each: 100 ops last about as long as handing the GIL from
# one thread to the next, so at 100 the figure would measure the interpreter's
# thread switches rather than the cache (keys stay below the next worker's ids).
OPS_PER_THREAD = 1000

# "Scales linearly" means total work grows in proportion to the number of
# workers, i.e. the cost per operation stays flat. With 100 ops per worker, one
# worker's round takes only tens of microseconds, so fixed per-round costs
# (creating and gathering tasks, waking threads) and scheduler noise on a shared
# machine move the small end by tens of percent; a real scaling failure (lock
# convoys, O(workers^2) scheduling, contention collapse) costs a factor of the
# worker count, 16x here. A 3x bound tolerates the noise and still catches any
# such failure.
SCALING_FACTOR = 3.0


def describe(cfg: CheckConfig) -> str:
    """The criterion in a user's words."""
    lo, hi = min(WORKER_COUNTS), max(WORKER_COUNTS)
    return (
        f"{lo} to {hi} asyncio tasks sharing one EmbeddingCache, and {lo} to {hi} OS threads "
        f"sharing one SyncEmbeddingCache, each alternate a put of a new {cfg.dim}-dim vector "
        f"and a get of it; the cost per operation with {hi} workers is at most "
        f"{SCALING_FACTOR:g}x the cost with {lo} (linear scaling keeps it flat)"
    )


def _worker_keys(workers: int, ops: int) -> list[list[tuple[CacheKey, CacheKey]]]:
    """Per worker, ops/2 (put key, get key) pairs: workload key worker*1000+i for
    even i is put, and the following get reads it back (a hit)."""
    return [
        [(workload_key(w * 1000 + i), workload_key(w * 1000 + i)) for i in range(0, ops, 2)]
        for w in range(workers)
    ]


def _room_for(keys: list[list[tuple[CacheKey, CacheKey]]], dim: int) -> float:
    """A budget (MB) holding every key any round puts, at `dim`: a get that
    misses its own put would be an eviction, not a concurrency fault."""
    return budget_mb(sum(len(pairs) for pairs in keys), dim)


async def _scaling_tasks(dim: int, rounds: int) -> dict[int, list[float]]:
    """Per-op ns of each round, per worker count, with asyncio tasks sharing one
    EmbeddingCache; worker counts are interleaved round by round."""
    keys = _worker_keys(max(WORKER_COUNTS), OPS_PER_WORKER)
    cache = EmbeddingCache(10_000, 3600, _room_for(keys, dim))
    embedding = np.full(dim, 0.25, dtype=np.float32)
    put, get = cache.put, cache.get

    async def worker(pairs: list[tuple[CacheKey, CacheKey]]) -> int:
        hits = 0
        for put_key, get_key in pairs:
            await put(put_key, embedding)
            if await get(get_key) is not None:
                hits += 1
        return hits

    out: dict[int, list[float]] = {w: [] for w in WORKER_COUNTS}
    for w in WORKER_COUNTS:  # warm up every key and code path once
        await asyncio.gather(*(worker(keys[t]) for t in range(w)))
    for _ in range(rounds):
        for w in WORKER_COUNTS:
            with gc_paused():
                t0 = time.perf_counter_ns()
                tasks = [asyncio.create_task(worker(keys[t])) for t in range(w)]
                hits = await asyncio.gather(*tasks)
                elapsed = time.perf_counter_ns() - t0
            if sum(hits) != w * OPS_PER_WORKER // 2:
                raise RuntimeError("concurrent access: a get missed a key its worker had put")
            out[w].append(elapsed / (w * OPS_PER_WORKER))
    return out


def _scaling_threads(dim: int, rounds: int) -> dict[int, list[float]]:
    """Per-op ns of each round, per thread count, with OS threads sharing one
    SyncEmbeddingCache. Threads are started outside the timing and released
    together by a barrier; a round lasts from the first thread's start to the
    last thread's finish."""
    keys = _worker_keys(max(WORKER_COUNTS), OPS_PER_THREAD)
    cache = SyncEmbeddingCache(10_000, 3600, _room_for(keys, dim))
    embedding = np.full(dim, 0.25, dtype=np.float32)
    put, get = cache.put, cache.get

    def run_round(w: int) -> float:
        barrier = threading.Barrier(w)
        starts = [0] * w
        ends = [0] * w
        hits = [0] * w
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                pairs = keys[t]
                barrier.wait()
                n = 0
                starts[t] = time.perf_counter_ns()
                for put_key, get_key in pairs:
                    put(put_key, embedding)
                    if get(get_key) is not None:
                        n += 1
                ends[t] = time.perf_counter_ns()
                hits[t] = n
            except BaseException as exc:  # reported after join
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(w)]
        with gc_paused():
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        if errors:
            raise errors[0]
        if sum(hits) != w * OPS_PER_THREAD // 2:
            raise RuntimeError("concurrent access: a get missed a key its thread had put")
        return (max(ends) - min(starts)) / (w * OPS_PER_THREAD)

    out: dict[int, list[float]] = {w: [] for w in WORKER_COUNTS}
    for w in WORKER_COUNTS:
        run_round(w)
    for _ in range(rounds):
        for w in WORKER_COUNTS:
            out[w].append(run_round(w))
    return out


def _scaling_check(kind: str, per_op: dict[int, float]) -> Check:
    """The criterion-4 check for one kind of worker (asyncio tasks or threads)."""
    lo, hi = min(WORKER_COUNTS), max(WORKER_COUNTS)
    ratio = per_op[hi] / per_op[lo]
    return Check(
        f"{kind}, {hi} vs {lo}",
        f"<= {SCALING_FACTOR:.1f}x",
        f"{ratio:.2f}x ({per_op[lo]:,.0f} -> {per_op[hi]:,.0f} ns/op)",
        ratio <= SCALING_FACTOR,
        round(ratio, 4),
        SCALING_FACTOR,
        "ratio",
    )


def criterion_scaling(cfg: CheckConfig) -> Criterion:
    """Criterion 4: flat per-op cost from 1 to 16 workers, tasks and threads."""
    tasks = asyncio.run(_scaling_tasks(cfg.dim, cfg.scaling_rounds_tasks))
    threads = _scaling_threads(cfg.dim, cfg.scaling_rounds_threads)
    tasks_med = {w: float(median(v)) for w, v in tasks.items()}
    threads_med = {w: float(median(v)) for w, v in threads.items()}
    c = Criterion(4, "concurrent access scales", describe(cfg))
    c.checks.append(_scaling_check("asyncio tasks", tasks_med))
    c.checks.append(_scaling_check("OS threads", threads_med))
    c.details = {
        "statistic": "median over rounds of per-op ns",
        "ops_per_worker": {"asyncio": OPS_PER_WORKER, "threads": OPS_PER_THREAD},
        "workload": "each worker alternates put(new key) and get(that key)",
        "rounds": {"asyncio": cfg.scaling_rounds_tasks, "threads": cfg.scaling_rounds_threads},
        "factor": SCALING_FACTOR,
        "asyncio_ns_per_op": {str(w): round(v, 1) for w, v in tasks_med.items()},
        "threads_ns_per_op": {str(w): round(v, 1) for w, v in threads_med.items()},
    }
    return c
