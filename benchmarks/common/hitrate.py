"""Hit-rate workloads: reproducible access traces, the caches replaying them, and
Belady's offline optimum. Used by benchmarks/bench_hitrate.py (``track_``) and
by ``python -m benchmarks.common.hitrate`` from the repository's root (the
docs/performance.md's table). Not part of the package: only benchmarks use it.

Every trace is a sequence of integer ids generated from one seed (RNG_SEED of
the shared workloads). Replaying a trace is what a read-through embedding cache
does for each id: ``get``, and on a miss ``put`` (the embedding just computed).
The hit rate is hits over accesses, cold misses included.

Traces (the shapes an embedding cache sees; none is a recorded production trace):

* ``zipf``: Zipf(0.9) popularity over 200,000 ids (query traffic).
* ``zipf+scan``: the same, with a scan of 10,000 never-seen ids after every
  20,000 accesses (re-indexing passes embedding one-off chunks).
* ``loop``: a corpus of 1.2x the cache size re-read in order, again and again.
* ``zipf-shift``: Zipf(0.9) whose ranking is reshuffled every 50,000 accesses
  (popularity that moves: favours recency).
* ``oltp-like``: generated from the published description of the ARC paper's
  OLTP trace family (Megiddo & Modha, FAST '03): a small hot set of records
  hit most of the time, a long uniform tail, and periodic sequential sweeps.
  Generated from that description, not the recorded trace.
"""

from __future__ import annotations

import heapq
import importlib.util
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from embcache import CacheKey, SyncEmbeddingCache
from embcache.cli.workloads import RNG_SEED

__all__ = [
    "CACHE_SIZE",
    "POLICIES",
    "TRACES",
    "belady_hit_rate",
    "embcache_hit_rate",
    "hit_rate",
    "theine_available",
    "theine_hit_rate",
    "trace",
]

CACHE_SIZE = 2_000
"""Entries every cache may hold in the hit-rate runs (1% of the Zipf ids)."""

Trace = npt.NDArray[np.int64]


def _zipf_ids(rng: np.random.Generator, n_ids: int, s: float, n: int) -> Trace:
    """`n` draws of ranks 0..n_ids-1 with P(rank r) proportional to 1/(r+1)^s."""
    weights = 1.0 / np.arange(1, n_ids + 1, dtype=np.float64) ** s
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return np.searchsorted(cdf, rng.random(n), side="right").astype(np.int64)


def _zipf(rng: np.random.Generator, n: int) -> Trace:
    ranks = _zipf_ids(rng, 200_000, 0.9, n)
    # ids are a random permutation of ranks: popularity says nothing about the id
    return rng.permutation(200_000).astype(np.int64)[ranks]


def _zipf_scan(rng: np.random.Generator, n: int) -> Trace:
    base = _zipf(rng, n)
    parts: list[Trace] = []
    fresh = 1_000_000           # scan ids never collide with Zipf ids, nor repeat
    for start in range(0, n, 20_000):
        parts.append(base[start:start + 20_000])
        parts.append(np.arange(fresh, fresh + 10_000, dtype=np.int64))
        fresh += 10_000
    return np.concatenate(parts)


def _loop(rng: np.random.Generator, n: int) -> Trace:
    corpus = int(CACHE_SIZE * 1.2)
    return np.resize(np.arange(corpus, dtype=np.int64), n)


def _zipf_shift(rng: np.random.Generator, n: int) -> Trace:
    ranks = _zipf_ids(rng, 200_000, 0.9, n)
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, 50_000):
        perm = rng.permutation(200_000).astype(np.int64)
        out[start:start + 50_000] = perm[ranks[start:start + 50_000]]
    return out


def _oltp_like(rng: np.random.Generator, n: int) -> Trace:
    hot = CACHE_SIZE // 2                  # hot records: half the cache
    tail = 100_000                         # the rest of the table
    kind = rng.random(n)
    out = np.where(kind < 0.6, rng.integers(0, hot, n),
                   hot + rng.integers(0, tail, n)).astype(np.int64)
    # every 25,000 accesses a sequential sweep over 5,000 tail records
    sweep = hot
    for start in range(0, n, 25_000):
        stop = min(n, start + 5_000)
        out[start:stop] = hot + (sweep + np.arange(stop - start)) % tail
        sweep += stop - start
    return out


TRACES: dict[str, tuple[Callable[[np.random.Generator, int], Trace], int]] = {
    "zipf": (_zipf, 300_000),
    "zipf+scan": (_zipf_scan, 240_000),
    "loop": (_loop, 120_000),
    "zipf-shift": (_zipf_shift, 300_000),
    "oltp-like": (_oltp_like, 200_000),
}
"""name -> (generator, accesses before scans are added)."""

POLICIES = ("lru", "tinylfu", "theine", "belady")

_traces: dict[str, Trace] = {}


def trace(name: str) -> Trace:
    """The trace `name`, generated once per process from RNG_SEED."""
    if name not in _traces:
        make, n = TRACES[name]
        _traces[name] = make(np.random.default_rng([RNG_SEED, list(TRACES).index(name)]), n)
    return _traces[name]


def _keys_for(ids: Trace) -> tuple[list[CacheKey], npt.NDArray[np.int64]]:
    """One CacheKey per distinct id, and each access's index into them."""
    unique, index = np.unique(ids, return_inverse=True)
    return [CacheKey(f"doc-{i}", "hitrate") for i in unique.tolist()], index.astype(np.int64)


def embcache_hit_rate(ids: Trace, size: int, policy: str) -> float:
    """Read-through replay on SyncEmbeddingCache(size, policy=policy), dim 1."""
    keys, index = _keys_for(ids)
    cache = SyncEmbeddingCache(size, None, 64.0, dim=1, policy=policy)
    get, put = cache.get, cache.put
    vector = np.ones(1, np.float32)
    hits = 0
    for i in index.tolist():
        k = keys[i]
        if get(k) is None:
            put(k, vector)
        else:
            hits += 1
    return hits / len(ids)


def theine_available() -> bool:
    return importlib.util.find_spec("theine") is not None


def theine_hit_rate(ids: Trace, size: int) -> float:
    """The same replay on theine's W-TinyLFU Cache(size) (values are the ids)."""
    from theine import Cache

    cache: Any = Cache(size)
    get, set_ = cache.get, cache.set
    hits = 0
    for x in ids.tolist():
        _, found = get(x)
        if found:
            hits += 1
        else:
            set_(x, x)
    return hits / len(ids)


def belady_hit_rate(ids: Sequence[int] | Trace, size: int) -> float:
    """Belady's optimum, computed offline: on a miss with the cache full, evict the
    entry used again furthest in the future, or bypass the cache if the missed
    id itself is used again last (an admission policy may decline)."""
    arr = np.asarray(ids, dtype=np.int64)
    n = len(arr)
    never = n + 1
    order = np.argsort(arr, kind="stable")
    nxt = np.full(n, never, dtype=np.int64)
    same = arr[order[1:]] == arr[order[:-1]]
    nxt[order[:-1][same]] = order[1:][same]
    cached: dict[int, int] = {}          # id -> next use
    heap: list[tuple[int, int]] = []     # (-next use, id), stale entries skipped
    hits = 0
    for x, nu in zip(arr.tolist(), nxt.tolist()):
        if x in cached:
            hits += 1
        elif len(cached) >= size:
            while True:
                far, victim = heap[0]
                if cached.get(victim) == -far:
                    break
                heapq.heappop(heap)
            if nu >= -far:
                continue                 # bypass: the missed id is needed last
            heapq.heappop(heap)
            del cached[victim]
        cached[x] = nu
        heapq.heappush(heap, (-nu, x))
    return hits / n


def hit_rate(trace_name: str, policy: str, size: int = CACHE_SIZE) -> float:
    ids = trace(trace_name)
    if policy == "belady":
        return belady_hit_rate(ids, size)
    if policy == "theine":
        return theine_hit_rate(ids, size)
    return embcache_hit_rate(ids, size, policy)


def _in_fresh_process(job: tuple[str, str]) -> float:
    return hit_rate(*job)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the hit-rate table of docs/performance.md (percent), one row per trace.

    embcache's index and sketch hash under a secret key drawn per process, and
    theine seeds its own, so a hashing policy's hit rate moves a little from one
    process to the next: ``--processes N`` replays each trace in N fresh
    processes and prints the mean and the range. LRU and Belady do not depend
    on hashing."""
    import argparse
    import multiprocessing

    parser = argparse.ArgumentParser(prog="python -m benchmarks.common.hitrate")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    policies = [p for p in POLICIES if p != "theine" or theine_available()]
    print(f"cache size {CACHE_SIZE} entries, seed {RNG_SEED}, {args.processes} process(es)")
    print("| trace | accesses | " + " | ".join(policies) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in policies) + " |")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        for name in TRACES:
            cells = []
            for p in policies:
                runs = args.processes if p in ("tinylfu", "theine") else 1
                rates = [100.0 * r for r in pool.map(_in_fresh_process, [(name, p)] * runs)]
                cell = f"{sum(rates) / len(rates):.2f}"
                if runs > 1:
                    cell += f" ({min(rates):.2f}-{max(rates):.2f})"
                cells.append(cell)
            print(f"| {name} | {len(trace(name)):,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
