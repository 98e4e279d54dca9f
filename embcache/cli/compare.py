"""``embcache check --compare``: embcache side by side with the installed peer
caches, against embcache's performance goals.

Every contender runs the same timed loops as the asv suites (``LOOPS`` in
embcache.cli.peers): the operation inline in the loop, no adapter method in
between, results kept the same way on both sides. Inputs come from
embcache.cli.workloads. Goals (:data:`GOALS`) are reported, never enforced:
only the criteria decide the exit code.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, EmbeddingCache, SyncEmbeddingCache
from embcache.cli.measure import Samples, atimed, gc_paused, machine_info, timed
from embcache.cli.peers import LOOPS, PEERS, Loops, available_peers, make_mapping
from embcache.cli.redis_compare import run_redis_compare
from embcache.cli.report import Comparison, Figure, Progress
from embcache.cli.workloads import (
    MODEL,
    CheckConfig,
    ComparisonInputs,
    Vector,
    budget_mb,
    comparison_inputs,
)

__all__ = [
    "BATCH",
    "DEFAULT",
    "FIXED",
    "GOALS",
    "PER_OP",
    "Goal",
    "measure_against_peers",
    "run_compare",
]

BATCH = 1000
"""Keys per batch lookup."""


@dataclass(frozen=True)
class Goal:
    """A performance goal: the figure's label, its bound, how the bound applies
    ("ratio": embcache / fastest peer <= goal; "absolute": embcache <= goal;
    "minimum": embcache >= goal), and what the figure measures ({dim}: the
    dimension of the run)."""

    label: str
    goal: float
    kind: str
    meaning: str


GOALS: dict[str, Goal] = {
    "put_new": Goal(
        "put, new key, fresh cache",
        0.6,
        "ratio",
        "time to store a {dim}-dim vector under a new key in a brand-new cache, whose memory "
        "is touched for the first time, as a user's first puts go",
    ),
    "get_hit": Goal(
        "get hit, new array",
        0.5,
        "ratio",
        "time to look up a stored vector and return a new array the caller owns",
    ),
    "put_full": Goal(
        "put, full cache (evicts)",
        0.5,
        "ratio",
        "time to store under a new key in a full cache, which evicts the least recently used entry",
    ),
    "get_miss": Goal("get miss", 1.0, "ratio", "time to look up a key that is not in the cache"),
    "bytes_per_entry": Goal(
        "bytes/entry beyond payload",
        128.0,
        "absolute",
        "memory each entry costs beyond the vector's own dim x 4 bytes",
    ),
    "await_overhead": Goal(
        "await get - get (ns)",
        150.0,
        "absolute",
        "what `await EmbeddingCache.get` adds to a hit over `SyncEmbeddingCache.get`",
    ),
    "key_create": Goal(
        "CacheKey creation (ns)",
        250.0,
        "absolute",
        "time to create a CacheKey from a 64-hex-digit content hash, a model and a chunk id",
    ),
    "batch_get": Goal(
        "get_many 1,000 keys, /row",
        0.25,
        "ratio",
        "get_many of 1,000 random keys into one (1000, dim) matrix, per row, against each "
        "peer's loop of gets plus np.stack",
    ),
    "batch_bandwidth": Goal(
        "get_many, % of memcpy",
        50.0,
        "minimum",
        "speed at which that get_many moves its payload, as a share of a plain memory copy "
        "(np.copyto) of the same bytes",
    ),
}
"""embcache's performance goals, by figure key."""


class _Contender:
    """One cache implementation under comparison: its name, how to make an empty
    one of a given capacity, and its timed loops."""

    def __init__(self, name: str, new: Callable[[int], Any], loops: Loops) -> None:
        self.name = name
        self.new = new
        self.loops = loops


PER_OP = ("put_new", "get_hit", "put_full", "get_miss", "batch_get")
"""The figures timed against the peers, in the order they are measured."""


def _rounds(
    contenders: list[_Contender],
    repeats: int,
    prepare: Callable[[_Contender], Any],
    run: Callable[[_Contender, Any], int],
    ops: int,
) -> dict[str, Samples]:
    """Samples of one figure, interleaved: each of `repeats` rounds (after one
    unrecorded warm-up round) times every contender once, one after the other.
    ``prepare(c)`` (untimed) makes what ``run(c, state)`` times; `ops`
    operations per run."""
    samples = {c.name: Samples() for c in contenders}
    for r in range(repeats + 1):
        for c in contenders:
            state = prepare(c)
            elapsed = run(c, state)
            if r:
                samples[c.name].add(elapsed, ops)
            del state
    return samples


def _measure_per_op(
    contenders: list[_Contender], inp: ComparisonInputs, repeats: int
) -> dict[str, dict[str, Samples]]:
    """Samples by figure (PER_OP) and contender, every figure interleaved."""
    ops = len(inp.put_pairs)
    out: dict[str, dict[str, Samples]] = {}

    def fresh(c: _Contender) -> Any:
        return c.new(ops)

    # put, new key, into a brand-new cache, as a user's first puts go: embcache's
    # slab pages are touched for the first time; a peer's allocator reuses memory
    # the previous round freed
    out["put_new"] = _rounds(
        contenders, repeats, fresh, lambda c, cache: timed(c.loops.puts, cache, inp.put_pairs), ops
    )
    # gets, and the batch get, on one filled cache per contender
    filled: dict[str, Any] = {}
    for c in contenders:
        cache = filled[c.name] = c.new(ops)
        c.loops.puts(cache, inp.put_pairs)
        if len(cache) != ops:
            raise RuntimeError(f"{c.name}: put of new keys evicted ({len(cache)} != {ops})")
    batch = inp.hit_keys[:BATCH]
    for key, keys in (("get_hit", inp.hit_keys), ("get_miss", inp.miss_keys)):
        out[key] = _rounds(
            contenders,
            repeats,
            lambda c: filled[c.name],
            lambda c, cache, keys=keys: timed(c.loops.gets, cache, keys),  # type: ignore[misc]
            ops,
        )
    out["batch_get"] = _rounds(
        contenders,
        repeats,
        lambda c: filled[c.name],
        lambda c, cache: timed(c.loops.get_matrix, cache, batch),
        len(batch),
    )
    filled.clear()
    gc.collect()
    # put into a full cache (filled untimed before each run): every put evicts
    cap = len(inp.fill_pairs)

    def full(c: _Contender) -> Any:
        cache = c.new(cap)
        c.loops.puts(cache, inp.fill_pairs)
        return cache

    def put_full(c: _Contender, cache: Any) -> int:
        elapsed = timed(c.loops.puts, cache, inp.put_pairs)
        if len(cache) != cap:
            raise RuntimeError(f"{c.name}: full cache has {len(cache)} entries, expected {cap}")
        return elapsed

    out["put_full"] = _rounds(contenders, repeats, full, put_full, ops)
    return {key: out[key] for key in PER_OP}


def _peer_bytes_per_entry(name: str, dim: int, n: int, vectors: list[Vector]) -> float:
    """Bytes a peer holds per entry beyond the dim*4 payload, from tracemalloc
    around filling `n` entries (keys are built before tracing starts)."""
    keys = [CacheKey(f"bytes_{i:08d}", MODEL, None) for i in range(n)]
    pairs = [(k, vectors[i % len(vectors)]) for i, k in enumerate(keys)]
    puts = LOOPS[name].puts
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        mapping = make_mapping(name, n)
        puts(mapping, pairs)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    if len(mapping) != n:
        raise RuntimeError(f"{name}: holds {len(mapping)} of {n} entries")
    return (after - before - n * dim * 4) / n


def _embcache_allocated_per_entry(dim: int, n: int, vectors: list[Vector]) -> float:
    """Bytes a full fixed-dim SyncEmbeddingCache of `n` entries allocates per
    entry beyond the payload (slab rows, entry table, index)."""
    cache = SyncEmbeddingCache(n, None, budget_mb(n, dim), dim=dim)
    for i in range(n):
        cache.put(CacheKey(f"bytes_{i:08d}", MODEL, None), vectors[i % len(vectors)])
    info = cache.get_cache_info()
    return (info.allocated_bytes - n * dim * 4) / n


async def _await_gets(cache: EmbeddingCache, keys: list[CacheKey]) -> object:
    """``x = await cache.get(k)`` for every k: the asyncio form of embcache_gets."""
    get = cache.get
    x = None
    for k in keys:
        x = await get(k)
    return x


async def _await_overhead(inp: ComparisonInputs, repeats: int) -> tuple[Samples, Samples]:
    """Per-op ns of ``await EmbeddingCache.get`` and of the core's ``get`` on hits,
    measured alternately in the same event loop."""
    ops = len(inp.put_pairs)
    cache = EmbeddingCache(ops, None, budget_mb(ops, inp.dim), dim=inp.dim)
    for k, v in inp.put_pairs:
        await cache.put(k, v)
    sync_gets = LOOPS["embcache"].gets
    s_sync, s_async = Samples(), Samples()
    timed(sync_gets, cache.sync, inp.hit_keys)
    await atimed(_await_gets, cache, inp.hit_keys)
    for _ in range(repeats):
        s_sync.add(timed(sync_gets, cache.sync, inp.hit_keys), ops)
        s_async.add(await atimed(_await_gets, cache, inp.hit_keys), ops)
    return s_sync, s_async


def _key_creation(ops: int, repeats: int) -> Samples:
    """Per-op ns of ``CacheKey(content_hash, model_version, chunk_id)`` with a
    64-hex-digit content hash (the key is dropped at once, so its deallocation
    is counted as well)."""
    triples = [(f"{i:064x}", MODEL, f"chunk_{i % 100}") for i in range(ops)]
    make = CacheKey
    s = Samples()
    for r in range(repeats + 1):
        with gc_paused():
            t0 = time.perf_counter_ns()
            for a, b, c in triples:
                make(a, b, c)
            elapsed = time.perf_counter_ns() - t0
        if r:  # the first pass is a warm-up
            s.add(elapsed, ops)
    return s


def _memcpy_per_row(inp: ComparisonInputs, repeats: int) -> Samples:
    """Per-row cost of a plain memcpy (np.copyto) of a BATCH-row payload."""
    src = np.stack(inp.vectors * (BATCH // len(inp.vectors) + 1))[:BATCH]
    dst = np.empty_like(src)
    memcpy = Samples()
    for _ in range(repeats * 3):
        t0 = time.perf_counter_ns()
        np.copyto(dst, src)
        memcpy.add(time.perf_counter_ns() - t0, BATCH)
    return memcpy


def _figure(
    key: str,
    unit: str,
    embcache: float,
    peers: dict[str, float],
    dim: int,
    detail: dict[str, Any],
    cache: str = "",
) -> Figure:
    """A figure with the label, bound and meaning of goal `key`, measured on
    embcache's `cache` ("default", "dim=N"; "" when not told apart)."""
    g = GOALS[key.removesuffix("_fixed_dim")]
    return Figure(
        key,
        g.label,
        unit,
        embcache,
        peers,
        g.goal,
        g.kind,
        detail,
        g.meaning.format(dim=dim),
        cache,
    )


DEFAULT = "embcache"
"""Contender name of the default cache: ``SyncEmbeddingCache(...)``, dim not given."""
FIXED = "embcache dim=N"
"""Contender name of the fixed-dim cache (N: the run's dimension)."""


def measure_against_peers(
    inp: ComparisonInputs, peers: list[str], repeats: int
) -> dict[str, dict[str, Samples]]:
    """Samples of every figure of :data:`PER_OP`, by contender: the default
    cache (:data:`DEFAULT`), the fixed-dim one (:data:`FIXED`, N = ``inp.dim``)
    and each peer in `peers`; every figure's `repeats` rounds interleave them
    (see :func:`run_compare`'s notes for the method)."""
    dim = inp.dim

    def new_default(capacity: int) -> SyncEmbeddingCache:
        return SyncEmbeddingCache(capacity, None, budget_mb(capacity, dim))

    def new_fixed(capacity: int) -> SyncEmbeddingCache:
        return SyncEmbeddingCache(capacity, None, budget_mb(capacity, dim), dim=dim)

    def new_peer(name: str) -> Callable[[int], Any]:
        return lambda capacity: make_mapping(name, capacity)

    contenders = [
        _Contender(DEFAULT, new_default, LOOPS["embcache"]),
        _Contender(FIXED.replace("N", str(dim)), new_fixed, LOOPS["embcache"]),
    ]
    contenders += [_Contender(p, new_peer(p), LOOPS[p]) for p in peers]
    return _measure_per_op(contenders, inp, repeats)


def run_compare(cfg: CheckConfig, progress: Progress) -> Comparison:
    """Measure embcache (the default cache and a fixed-dim one) and every
    installed peer side by side: ns/op, best of repeats; every figure's
    repeats interleave the contenders, so drift affects all alike."""
    dim, ops, repeats = cfg.dim, cfg.compare_ops, cfg.compare_repeats
    peers = available_peers()
    missing = [name for name in PEERS if name not in peers]
    steps = 5
    progress.step(f"[compare 1/{steps}] building {ops:,} keys and vectors (dim {dim})")
    inp = comparison_inputs(dim, ops)
    fixed_name = FIXED.replace("N", str(dim))
    progress.step(
        f"[compare 2/{steps}] embcache (default, dim={dim}) vs "
        f"{', '.join(peers) or 'no peers'}: put/get/batch"
    )
    per_op = measure_against_peers(inp, peers, repeats)
    gc.collect()

    progress.step(f"[compare 3/{steps}] bytes per entry")
    n_bytes = cfg.compare_bytes_entries
    peer_bytes = {p: _peer_bytes_per_entry(p, dim, n_bytes, inp.vectors) for p in peers}
    allocated = _embcache_allocated_per_entry(dim, n_bytes, inp.vectors)

    progress.step(f"[compare 4/{steps}] await overhead, CacheKey creation")
    s_sync, s_async = asyncio.run(_await_overhead(inp, repeats))
    keys = _key_creation(ops, repeats)
    progress.step(f"[compare 5/{steps}] memcpy of a {BATCH:,}-row batch's bytes")
    memcpy_rows = _memcpy_per_row(inp, repeats)
    redis_part = run_redis_compare(cfg, progress)  # Redis tier rows, when a server is there
    progress.done()

    figures: list[Figure] = []
    for key in PER_OP:
        samples = per_op[key]
        unit = "ns/row" if key == "batch_get" else "ns/op"
        peer_best = {p: samples[p].best for p in peers}
        for name, cache in ((DEFAULT, "default"), (fixed_name, f"dim={dim}")):
            shown = {name: samples[name], **{p: samples[p] for p in peers}}
            figures.append(
                _figure(
                    key if cache == "default" else f"{key}_fixed_dim",
                    unit,
                    samples[name].best,
                    peer_best,
                    dim,
                    {n: s.as_dict() for n, s in shown.items()},
                    cache,
                )
            )
    figures.append(
        _figure(
            "bytes_per_entry",
            "bytes",
            float(ENTRY_OVERHEAD_BYTES),
            peer_bytes,
            dim,
            {
                "embcache_source": "CacheInfo.entry_overhead_bytes (exact accounting)",
                "embcache_allocated_per_entry": round(allocated, 2),
                "peers_source": f"tracemalloc around filling {n_bytes:,} entries, minus payload",
                "entries": n_bytes,
            },
        )
    )
    figures.append(
        _figure(
            "await_overhead",
            "ns",
            s_async.best - s_sync.best,
            {},
            dim,
            {"await_get": s_async.as_dict(), "sync_get": s_sync.as_dict()},
        )
    )
    figures.append(_figure("key_create", "ns", keys.best, {}, dim, keys.as_dict()))
    row_bytes = dim * 4
    get_many_gbs = row_bytes / per_op["batch_get"][DEFAULT].best
    memcpy_gbs = row_bytes / memcpy_rows.best
    figures.append(
        _figure(
            "batch_bandwidth",
            "%",
            100.0 * get_many_gbs / memcpy_gbs,
            {},
            dim,
            {
                "get_many_GB_per_s": round(get_many_gbs, 3),
                "memcpy_GB_per_s": round(memcpy_gbs, 3),
                "memcpy": memcpy_rows.as_dict(),
                "payload_bytes": BATCH * row_bytes,
            },
        )
    )
    notes = [
        f"how: per figure, {repeats} rounds after a warm-up round; each round times the default "
        f"cache, then dim={dim}, then each peer, one after the other (interleaved), each run "
        f"over the whole pre-shuffled list of {ops:,} keys, gc disabled; a contender's figure "
        "is its best round; the loop's own overhead is included for every contender.",
        f"embcache: 'default' is SyncEmbeddingCache(capacity, None, budget), dim not given (the "
        f"cache as users build it); 'dim={dim}' passes dim={dim}; both called through bound "
        "put/get methods. Peers copy vectors in and out inline in the timed loop (m[k] = "
        "v.copy(); x = m.get(k); x = None if x is None else x.copy()), keyed by the same "
        "CacheKey objects; the loops are those of the asv suite bench_peers "
        "(embcache.cli.peers).",
        "put, new key: into a brand-new cache each round (made untimed), as a user's first "
        "puts go: embcache touches its slab pages for the first time; a peer's allocator "
        "reuses the memory the previous round freed. Put into full cache: filled (untimed) "
        f"to {len(inp.fill_pairs):,} entries before each round.",
        f"bytes/entry: embcache = accounted entry_overhead_bytes (allocated per entry beyond "
        f"payload when full: {allocated:.1f} B); peers = tracemalloc.",
        f"batch get: embcache get_many({BATCH:,} random keys) into one new matrix vs each "
        f"peer's loop of {BATCH:,} gets + np.stack; % of memcpy = the default cache's get_many "
        "payload bytes/s over np.copyto of the same bytes (contiguous, same size), both best "
        "of repeats.",
        "Goals are not floors: a goal MISSED here does not change the exit code.",
    ]
    if missing:
        notes.append("not installed, skipped: " + ", ".join(missing))
    figures += redis_part.figures
    notes += redis_part.notes
    machine = machine_info()
    load = machine["load_average"]
    if load is not None:
        notes.append(
            f"load average at the end: {load[0]:.2f} (1 min) on {machine['cpu_count']} "
            "CPUs; other busy processes inflate every figure, best-of-repeats only partly hides it."
        )
    return Comparison(
        dim=dim,
        ops=ops,
        repeats=repeats,
        peers=peers + redis_part.peers,
        missing_peers=missing,
        figures=figures,
        method="best of repeats",
        notes=notes,
    )
