"""``embcache check``: the seed task's success criteria, measured on this machine.

The seed task (a Rust embedding cache benchmarked with criterion) sets six
success criteria; this module measures each one through embcache's public API
(``EmbeddingCache`` driven by asyncio, as the seed drives its cache with tokio,
and ``SyncEmbeddingCache`` for OS threads) and returns a report with a verdict
per check. Concurrent-access scaling is split in two criteria (asyncio tasks
and OS threads), so there are seven:

1. put throughput > 1,000 ops/s
2. get throughput > 5,000 ops/s
3. memory estimation accuracy within +-50% (and embcache's accounting is exact)
4. concurrent access scales: per-op cost at 16 workers <= 3x that at 1 worker
5. 10k-entry insert time < 30 s
6. 1k lookups on 10k entries < 0.5 s, size == 10,000, hit rate > 0.9
7. memory stays within limits (accounted bytes, allocated bytes, process RSS)

With ``compare=True`` it also measures embcache side by side with every
installed peer cache (``embcache._peers``) against the performance goals of
DESIGN.md. Goals are reported, but only the criteria decide the exit code.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median
from typing import Any, TextIO, Union

import numpy as np
import numpy.typing as npt

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, EmbeddingCache, SyncEmbeddingCache
from embcache._measure import (
    Samples,
    atime_calls1,
    gc_paused,
    machine_info,
    rss_bytes,
    time_calls1,
    time_calls2,
)
from embcache._peers import available_peers, make_peer

__all__ = [
    "Check",
    "CheckConfig",
    "Comparison",
    "Criterion",
    "Figure",
    "Progress",
    "Report",
    "format_report",
    "report_to_json",
    "run_check",
    "run_compare",
]

Number = Union[int, float]
Vector = npt.NDArray[np.float32]

SEED_MODEL = "nomic-embed-text-v1.5"
WORKER_COUNTS = (1, 2, 4, 8, 16)
OPS_PER_WORKER = 100
# OS threads do 1000 ops each: 100 ops last about as long as handing the GIL from
# one thread to the next, so at 100 the figure would measure the interpreter's
# thread switches rather than the cache (keys stay below the next worker's ids).
OPS_PER_THREAD = 1000

# Criterion 4. "Scales linearly" means total work grows in proportion to the
# number of workers, i.e. the cost per operation stays flat. With 100 ops per
# worker, one worker's round takes only tens of microseconds, so fixed per-round
# costs (creating and gathering tasks, waking threads) and scheduler noise on a
# shared machine move the small end by tens of percent; a real scaling failure
# (lock convoys, O(workers^2) scheduling, contention collapse) costs a factor of
# the worker count, 16x here. A 3x bound tolerates the noise and still catches
# any such failure.
SCALING_FACTOR = 3.0

# Criterion 7: "small fixed overhead" allowed above the budget for the bytes a
# single-dimension cache allocates (tables and slab headers). Process RSS may
# exceed what the caches allocate: slabs of a mixed-dimension cache grow by
# realloc and the allocator keeps freed blocks resident (about 1.6x the budget
# was seen), hence 2x the budgets plus 16 MiB for interpreter and numpy noise.
# Once the caches are full, further puts must not grow RSS (boundedness proper).
ALLOCATED_SLACK_BYTES = 4096
RSS_SLACK_BYTES = 16 * 2**20
RSS_STEADY_BYTES = 4 * 2**20

MIB = 2**20


# --- report structures ------------------------------------------------------------


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

    def as_dict(self) -> dict[str, Any]:
        """JSON form of this check."""
        return {
            "label": self.label,
            "threshold": self.threshold,
            "measured": self.measured,
            "verdict": _verdict(self.passed),
            "passed": self.passed,
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
        }


@dataclass
class Criterion:
    """A success criterion of the seed task: one or more checks, all must pass."""

    number: int
    name: str
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every check of this criterion passed."""
        return all(c.passed for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """JSON form of this criterion."""
        return {
            "number": self.number,
            "name": self.name,
            "verdict": _verdict(self.passed),
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
        """Whether the DESIGN.md goal is met (None: not measurable here)."""
        if self.goal_kind == "absolute":
            return self.embcache <= self.goal
        if self.goal_kind == "minimum":
            return self.embcache >= self.goal
        ratio = self.ratio
        return None if ratio is None else ratio <= self.goal

    def as_dict(self) -> dict[str, Any]:
        """JSON form of this figure."""
        met = self.goal_met
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "embcache": round(self.embcache, 2),
            "peers": {k: round(v, 2) for k, v in self.peers.items()},
            "best_peer": self.best_peer,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "goal": self.goal,
            "goal_kind": self.goal_kind,
            "goal_verdict": "n/a" if met is None else _verdict(met),
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

    @property
    def passed(self) -> bool:
        """True when every criterion passed (comparison goals do not count)."""
        return all(c.passed for c in self.criteria)


@dataclass(frozen=True)
class CheckConfig:
    """Sizes of one run; ``quick`` shrinks only the costly parts."""

    quick: bool = False
    dim: int = 768
    scaling_rounds_tasks: int = 200
    scaling_rounds_threads: int = 60
    limit_budget_mb: float = 16.0
    limit_fill_factor: int = 16
    compare_ops: int = 10_000
    compare_repeats: int = 7
    compare_bytes_entries: int = 10_000

    @classmethod
    def make(cls, quick: bool, dim: int) -> CheckConfig:
        """Full-size or quick configuration at dimension `dim`."""
        if quick:
            return cls(
                quick=True,
                dim=dim,
                scaling_rounds_tasks=20,
                scaling_rounds_threads=8,
                limit_budget_mb=1.0,
                limit_fill_factor=48,
                compare_ops=1000,
                compare_repeats=3,
                compare_bytes_entries=1000,
            )
        return cls(quick=False, dim=dim)

    def as_dict(self) -> dict[str, Any]:
        """JSON form of the configuration."""
        return dict(self.__dict__)


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


# --- helpers ------------------------------------------------------------------------


def _verdict(passed: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if passed else "FAIL"


def _seed_key(i: int) -> CacheKey:
    """The seed's create_test_key(i)."""
    return CacheKey(f"benchmark_key_{i}", SEED_MODEL, f"chunk_{i % 100}")


def _fmt_int(x: Number) -> str:
    """An integer with thousands separators."""
    return f"{int(round(x)):,}"


def _fmt_seconds(s: float) -> str:
    """Seconds, with units that keep small values readable."""
    if s >= 1.0:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_bytes(n: Number) -> str:
    """Bytes, in B, KiB or MiB."""
    if abs(n) >= MIB:
        return f"{n / MIB:.2f} MiB"
    if abs(n) >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{int(n)} B"


# --- criteria 1 and 2: put / get throughput (seed test_performance_regression) ---------


async def _seed_puts(cache: EmbeddingCache, dim: int) -> int:
    """The seed's performance-regression test, put half: 1000 warm-up puts, then
    1000 timed puts of new keys, each key built inside the timed loop as the seed
    builds it. Returns the timed nanoseconds."""
    embedding = np.full(dim, 0.5, dtype=np.float32)
    for i in range(1000):
        await cache.put(_seed_key(i), embedding)
    with gc_paused():
        t0 = time.perf_counter_ns()
        for i in range(1000, 2000):
            await cache.put(_seed_key(i), embedding)
        return time.perf_counter_ns() - t0


async def _seed_gets(cache: EmbeddingCache, first: int, count: int, step: int) -> tuple[int, int]:
    """Timed gets of keys first, first+step, ... (count of them), each key built
    inside the timed loop. Returns (nanoseconds, hits)."""
    hits = 0
    with gc_paused():
        t0 = time.perf_counter_ns()
        for i in range(first, first + count * step, step):
            if await cache.get(_seed_key(i)) is not None:
                hits += 1
        return time.perf_counter_ns() - t0, hits


def _criterion_put(cfg: CheckConfig, ctx: dict[str, Any]) -> Criterion:
    """Criterion 1: put throughput in EmbeddingCache(10000, 3600, 200)."""
    cache = EmbeddingCache(10_000, 3600, 200)
    ctx["regression_cache"] = cache
    put_ns = asyncio.run(_seed_puts(cache, cfg.dim))
    put_rate = 1000 / (put_ns / 1e9)
    c = Criterion(1, "put throughput")
    c.checks.append(
        Check(
            f"1,000 puts of new keys (dim {cfg.dim})",
            "> 1,000 ops/s",
            f"{_fmt_int(put_rate)} ops/s",
            put_rate > 1000,
            round(put_rate, 1),
            1000,
            "ops/s",
        )
    )
    c.details = {"elapsed_ns": put_ns, "ops": 1000, "ns_per_op": put_ns / 1000}
    return c


def _criterion_get(cfg: CheckConfig, ctx: dict[str, Any]) -> Criterion:
    """Criterion 2: get throughput, 1000 hits on criterion 1's cache."""
    cache: EmbeddingCache = ctx.pop("regression_cache")
    get_ns, hits = asyncio.run(_seed_gets(cache, 0, 1000, 1))
    get_rate = 1000 / (get_ns / 1e9)
    c = Criterion(2, "get throughput")
    c.checks.append(
        Check(
            "1,000 gets (hits)",
            "> 5,000 ops/s",
            f"{_fmt_int(get_rate)} ops/s",
            get_rate > 5000,
            round(get_rate, 1),
            5000,
            "ops/s",
        )
    )
    c.checks.append(
        Check("every lookup hits", "= 1,000", _fmt_int(hits), hits == 1000, hits, 1000, "hits")
    )
    c.details = {"elapsed_ns": get_ns, "ops": 1000, "ns_per_op": get_ns / 1000}
    return c


# --- criterion 3: memory estimation accuracy ---------------------------------------------


async def _memory_accuracy(dim: int) -> tuple[float, int, int, int]:
    """The seed's memory-usage test: 100 vectors of `dim` into EmbeddingCache(1000,
    3600, 100). Returns (memory_usage_mb, memory_usage_bytes, entry overhead, size)."""
    cache = EmbeddingCache(1000, 3600, 100)
    for i in range(100):
        key = CacheKey(f"memory_test_{i}", "v1", None)
        await cache.put(key, np.full(dim, float(i), dtype=np.float32))
    info = await cache.get_cache_info()
    return info.memory_usage_mb, info.memory_usage_bytes, info.entry_overhead_bytes, info.size


def _criterion_memory_accuracy(cfg: CheckConfig) -> Criterion:
    """Criterion 3: memory_usage_mb within +-50% of the payload, and exact bytes."""
    n, dim = 100, cfg.dim
    mb, used, overhead, size = asyncio.run(_memory_accuracy(dim))
    expected_mb = n * dim * 4 / MIB
    ratio = mb / expected_mb
    exact_bytes = n * (dim * 4 + ENTRY_OVERHEAD_BYTES)
    exact = used == exact_bytes and overhead == ENTRY_OVERHEAD_BYTES and size == n
    c = Criterion(3, "memory estimation accuracy")
    c.checks.append(
        Check(
            f"memory_usage_mb / payload ({n} x {dim} float32)",
            "ratio 0.50 .. 1.50",
            f"{ratio:.4f} ({mb:.4f} / {expected_mb:.4f} MB)",
            0.5 <= ratio <= 1.5,
            round(ratio, 6),
            [0.5, 1.5],
            "ratio",
        )
    )
    c.checks.append(
        Check(
            f"exact bytes (dim*4 + {ENTRY_OVERHEAD_BYTES} per entry)",
            f"= {_fmt_int(exact_bytes)} B",
            f"{_fmt_int(used)} B (exact: {'yes' if exact else 'no'})",
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


# --- criterion 4: concurrent access scaling ----------------------------------------------


def _worker_keys(workers: int, ops: int) -> list[list[tuple[CacheKey, CacheKey]]]:
    """Per worker, ops/2 (put key, get key) pairs: the seed's key thread_id*1000+i
    for even i is put, and the following get reads it back (a hit). The seed's
    own gets read odd keys that are never put, i.e. they only ever miss."""
    return [
        [(_seed_key(w * 1000 + i), _seed_key(w * 1000 + i)) for i in range(0, ops, 2)]
        for w in range(workers)
    ]


async def _scaling_tasks(dim: int, rounds: int) -> dict[int, list[float]]:
    """Per-op ns of each round, per worker count, with asyncio tasks sharing one
    EmbeddingCache; worker counts are interleaved round by round."""
    cache = EmbeddingCache(10_000, 3600, 500)
    embedding = np.full(dim, 0.25, dtype=np.float32)
    keys = _worker_keys(max(WORKER_COUNTS), OPS_PER_WORKER)
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
    cache = SyncEmbeddingCache(10_000, 3600, 500)
    embedding = np.full(dim, 0.25, dtype=np.float32)
    keys = _worker_keys(max(WORKER_COUNTS), OPS_PER_THREAD)
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
        f"{kind}, ns/op {hi} vs {lo} worker(s)",
        f"<= {SCALING_FACTOR:.1f}x",
        f"{ratio:.2f}x ({per_op[lo]:,.0f} -> {per_op[hi]:,.0f} ns/op)",
        ratio <= SCALING_FACTOR,
        round(ratio, 4),
        SCALING_FACTOR,
        "ratio",
    )


def _criterion_scaling(cfg: CheckConfig) -> Criterion:
    """Criterion 4: flat per-op cost from 1 to 16 workers, tasks and threads."""
    tasks = asyncio.run(_scaling_tasks(cfg.dim, cfg.scaling_rounds_tasks))
    threads = _scaling_threads(cfg.dim, cfg.scaling_rounds_threads)
    tasks_med = {w: float(median(v)) for w, v in tasks.items()}
    threads_med = {w: float(median(v)) for w, v in threads.items()}
    c = Criterion(4, "concurrent access scales")
    c.checks.append(_scaling_check("asyncio tasks", tasks_med))
    c.checks.append(_scaling_check("OS threads (sync core)", threads_med))
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


# --- criteria 5 and 6: large dataset (seed test_large_dataset_scalability) ----------------


async def _seed_inserts(cache: EmbeddingCache, dim: int) -> int:
    """10k timed puts of new keys (built inside the loop). Returns nanoseconds."""
    embedding = np.full(dim, 0.1, dtype=np.float32)
    with gc_paused():
        t0 = time.perf_counter_ns()
        for i in range(10_000):
            await cache.put(_seed_key(i), embedding)
        return time.perf_counter_ns() - t0


def _criterion_insert(cfg: CheckConfig, ctx: dict[str, Any]) -> Criterion:
    """Criterion 5: 10k puts into EmbeddingCache(50000, 3600, 1000) in < 30 s."""
    cache = EmbeddingCache(50_000, 3600, 1000)
    ctx["large_cache"] = cache
    insert_ns = asyncio.run(_seed_inserts(cache, cfg.dim))
    c = Criterion(5, "10k-entry insert time")
    c.checks.append(
        Check(
            f"10,000 puts (dim {cfg.dim})",
            "< 30 s",
            _fmt_seconds(insert_ns / 1e9),
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
    lookup_ns, hits = asyncio.run(_seed_gets(cache, 0, 1000, 10))
    info = cache.sync.get_cache_info()
    size, hit_rate = info.size, info.hit_rate
    c = Criterion(6, "1k lookups on 10k entries")
    c.checks.append(
        Check(
            "1,000 gets (every 10th key)",
            "< 0.5 s",
            _fmt_seconds(lookup_ns / 1e9),
            lookup_ns < 0.5e9,
            lookup_ns / 1e9,
            0.5,
            "s",
        )
    )
    c.checks.append(Check("every lookup hits", "= 1,000", _fmt_int(hits), hits == 1000, hits, 1000))
    c.checks.append(Check("size", "== 10,000", _fmt_int(size), size == 10_000, size, 10_000))
    c.checks.append(Check("hit rate", "> 0.9", f"{hit_rate:.3f}", hit_rate > 0.9, hit_rate, 0.9))
    c.details = {"elapsed_ns": lookup_ns, "ns_per_get": lookup_ns / 1000}
    return c


# --- criterion 7: memory stays within limits --------------------------------------------


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
    more payload went in, checking the accounting after every put; accumulates
    into `run`."""
    run.budget = (await cache.get_cache_info()).memory_budget_bytes
    target = run.pushed_bytes + more_bytes
    n_vec = len(vectors)
    i = run.puts
    while run.pushed_bytes < target:
        vec = vectors[i % n_vec]
        await cache.put(CacheKey(f"limit_{i}", "limits-v1", None), vec)
        info = await cache.get_cache_info()
        run.puts += 1
        run.pushed_bytes += vec.nbytes
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
    dims = sorted({64, 128, 384, 768, 1536, 3072, cfg.dim})
    mixed_vectors = [rng.standard_normal(d).astype(np.float32) for d in dims for _ in range(4)]
    order = rng.permutation(len(mixed_vectors))
    mixed_vectors = [mixed_vectors[int(j)] for j in order]
    fixed_vectors = [rng.standard_normal(cfg.dim).astype(np.float32) for _ in range(16)]
    budget_mb = cfg.limit_budget_mb
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


def _criterion_memory_limits(cfg: CheckConfig) -> Criterion:
    """Criterion 7: accounted bytes never above budget, allocated bytes of a
    single-dimension cache within budget + small slack, bounded RSS growth."""
    res = asyncio.run(_memory_limits(cfg))
    mixed, fixed = res.mixed, res.fixed
    c = Criterion(7, "memory stays within limits")
    for name, run in (("mixed dims", mixed), (f"dim {cfg.dim}", fixed)):
        c.checks.append(
            Check(
                f"{name}: max used over {_fmt_bytes(run.pushed_bytes)} put",
                f"<= budget {_fmt_bytes(run.budget)}",
                f"{_fmt_bytes(run.max_used)}, {run.over_budget} over",
                run.over_budget == 0 and run.max_used <= run.budget and run.evictions > 0,
                run.max_used,
                run.budget,
                "bytes",
            )
        )
    alloc_limit = fixed.budget + ALLOCATED_SLACK_BYTES
    c.checks.append(
        Check(
            f"dim {cfg.dim}: max allocated bytes",
            f"<= budget + {_fmt_bytes(ALLOCATED_SLACK_BYTES)}",
            f"{_fmt_bytes(fixed.max_allocated)} ({fixed.max_allocated - fixed.budget:+,} B)",
            fixed.max_allocated <= alloc_limit,
            fixed.max_allocated,
            alloc_limit,
            "bytes",
        )
    )
    pushed = mixed.pushed_bytes + fixed.pushed_bytes
    rss_limit = 2 * res.budgets + RSS_SLACK_BYTES
    c.checks.append(
        Check(
            f"process RSS growth, both caches full ({_fmt_bytes(pushed)} put)",
            f"<= 2 x budgets + {_fmt_bytes(RSS_SLACK_BYTES)}",
            _fmt_bytes(res.rss_growth),
            res.rss_growth <= rss_limit,
            res.rss_growth,
            rss_limit,
            "bytes",
        )
    )
    c.checks.append(
        Check(
            f"RSS growth over the last {_fmt_bytes(pushed // 2)} put",
            f"<= {_fmt_bytes(RSS_STEADY_BYTES)}",
            _fmt_bytes(res.rss_second_half),
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


# --- the criteria run ---------------------------------------------------------------


CRITERIA: list[tuple[str, Callable[[CheckConfig, dict[str, Any]], Criterion]]] = [
    ("put throughput", _criterion_put),
    ("get throughput", _criterion_get),
    ("memory estimation accuracy", lambda cfg, ctx: _criterion_memory_accuracy(cfg)),
    (
        "concurrent access scales (1-16 asyncio tasks, OS threads)",
        lambda cfg, ctx: _criterion_scaling(cfg),
    ),
    ("10k-entry insert time", _criterion_insert),
    ("1k lookups on 10k entries", _criterion_lookups),
    ("memory stays within limits", lambda cfg, ctx: _criterion_memory_limits(cfg)),
]
"""The criteria in run order. 2 reads the cache 1 filled, 6 the one 5 filled
(passed along in a shared context), as in the seed's tests."""


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


# --- --compare --------------------------------------------------------------------------


@dataclass
class _Inputs:
    """Pre-built keys and vectors shared by every cache in the comparison."""

    dim: int
    put_pairs: list[tuple[CacheKey, Vector]]
    """New keys in random order, each with one of a few vectors."""
    hit_keys: list[CacheKey]
    """The same keys, in another random order."""
    miss_keys: list[CacheKey]
    """Keys never put, random order."""
    fill_pairs: list[tuple[CacheKey, Vector]]
    """Keys that fill the cache for the full-cache puts (capacity = len)."""
    vectors: list[Vector]


def _make_inputs(dim: int, ops: int) -> _Inputs:
    """Keys and vectors for the comparison, from a fixed-seed numpy Generator."""
    rng = np.random.default_rng(20240528)
    vectors = [rng.standard_normal(dim).astype(np.float32) for _ in range(64)]

    def keys(prefix: str, n: int) -> list[CacheKey]:
        ids = rng.permutation(n)
        return [
            CacheKey(f"{prefix}{int(i):064x}", SEED_MODEL, f"chunk_{int(i) % 100}") for i in ids
        ]

    new_keys = keys("n", ops)
    hit_order = [new_keys[int(i)] for i in rng.permutation(ops)]
    fill = keys("f", max(ops // 2, 1))
    return _Inputs(
        dim=dim,
        put_pairs=[(k, vectors[i % 64]) for i, k in enumerate(new_keys)],
        hit_keys=hit_order,
        miss_keys=keys("m", ops),
        fill_pairs=[(k, vectors[i % 64]) for i, k in enumerate(fill)],
        vectors=vectors,
    )


def _budget_mb(entries: int, dim: int) -> float:
    """A memory budget (MB) so `entries` vectors of `dim` fit with room to spare."""
    return (entries * (dim * 4 + ENTRY_OVERHEAD_BYTES)) / MIB * 1.25 + 1.0


class _Contender:
    """One cache implementation under comparison: how to make an empty one."""

    def __init__(self, name: str, factory: Callable[[int], Any]) -> None:
        self.name = name
        self.factory = factory
        self.put_new = Samples()
        self.put_cold = Samples()
        self.get_hit = Samples()
        self.get_miss = Samples()
        self.put_full = Samples()
        self.warm: Any = None
        """Cache reused (cleared) for embcache's warm put-new-key runs."""


def _measure_round(c: _Contender, inp: _Inputs, is_embcache: bool) -> None:
    """One repeat of every per-op figure for contender `c`."""
    ops = len(inp.put_pairs)
    # put, new key, on memory the cache already holds (warm): embcache reuses one
    # cleared cache (its slab stays allocated); a peer is rebuilt, and its
    # allocator reuses the memory the previous repeat freed.
    if is_embcache:
        if c.warm is None:
            c.warm = c.factory(ops)
            time_calls2(c.warm.put, inp.put_pairs)
        c.warm.clear()
        cache = c.warm
    else:
        cache = c.factory(ops)
    c.put_new.add(time_calls2(cache.put, inp.put_pairs), ops)
    if len(cache) != ops:
        raise RuntimeError(f"{c.name}: put of new keys evicted ({len(cache)} != {ops})")
    c.get_hit.add(time_calls1(cache.get, inp.hit_keys), ops)
    c.get_miss.add(time_calls1(cache.get, inp.miss_keys), ops)
    # put, new key, into a new cache (embcache: slab pages touched for the first time)
    fresh = c.factory(ops)
    c.put_cold.add(time_calls2(fresh.put, inp.put_pairs), ops)
    del fresh
    # put into a full cache: every put evicts the least recently used entry
    cap = len(inp.fill_pairs)
    full = c.factory(cap)
    time_calls2(full.put, inp.fill_pairs)
    c.put_full.add(time_calls2(full.put, inp.put_pairs), ops)
    if len(full) != cap:
        raise RuntimeError(f"{c.name}: full cache has {len(full)} entries, expected {cap}")
    del full


def _peer_bytes_per_entry(name: str, dim: int, n: int, vectors: list[Vector]) -> float:
    """Bytes a peer holds per entry beyond the dim*4 payload, from tracemalloc
    around filling `n` entries (keys are built before tracing starts)."""
    keys = [CacheKey(f"bytes_{i:08d}", SEED_MODEL, None) for i in range(n)]
    pairs = [(k, vectors[i % len(vectors)]) for i, k in enumerate(keys)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        peer = make_peer(name, n)
        for k, v in pairs:
            peer.put(k, v)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    if len(peer) != n:
        raise RuntimeError(f"{name}: holds {len(peer)} of {n} entries")
    return (after - before - n * dim * 4) / n


def _embcache_allocated_per_entry(dim: int, n: int, vectors: list[Vector]) -> float:
    """Bytes a full fixed-dim SyncEmbeddingCache of `n` entries allocates per
    entry beyond the payload (slab rows, entry table, index)."""
    cache = SyncEmbeddingCache(n, None, _budget_mb(n, dim), dim=dim)
    for i in range(n):
        cache.put(CacheKey(f"bytes_{i:08d}", SEED_MODEL, None), vectors[i % len(vectors)])
    info = cache.get_cache_info()
    return (info.allocated_bytes - n * dim * 4) / n


async def _await_overhead(inp: _Inputs, repeats: int) -> tuple[Samples, Samples]:
    """Per-op ns of ``await EmbeddingCache.get`` and of the core's ``get`` on hits,
    measured alternately in the same event loop."""
    ops = len(inp.put_pairs)
    cache = EmbeddingCache(ops, None, _budget_mb(ops, inp.dim), dim=inp.dim)
    for k, v in inp.put_pairs:
        await cache.put(k, v)
    sync_get, async_get = cache.sync.get, cache.get
    s_sync, s_async = Samples(), Samples()
    time_calls1(sync_get, inp.hit_keys)
    await atime_calls1(async_get, inp.hit_keys)
    for _ in range(repeats):
        s_sync.add(time_calls1(sync_get, inp.hit_keys), ops)
        s_async.add(await atime_calls1(async_get, inp.hit_keys), ops)
    return s_sync, s_async


def _key_creation(ops: int, repeats: int) -> Samples:
    """Per-op ns of ``CacheKey(content_hash, model_version, chunk_id)`` with a
    64-hex-digit content hash (the key is dropped at once, so its deallocation
    is counted as well)."""
    triples = [(f"{i:064x}", SEED_MODEL, f"chunk_{i % 100}") for i in range(ops)]
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


GOALS: dict[str, tuple[str, float, str]] = {
    "put_new": ("put, new key", 0.6, "ratio"),
    "get_hit": ("get hit (new array)", 0.6, "ratio"),
    "put_full": ("put into full cache (evicts)", 0.5, "ratio"),
    "get_miss": ("get miss", 1.2, "ratio"),
    "bytes_per_entry": ("bytes/entry beyond payload", 128.0, "absolute"),
    "await_overhead": ("await get - get (ns)", 150.0, "absolute"),
    "key_create": ("CacheKey creation (ns)", 150.0, "absolute"),
    "batch_get": ("batch get of 1,000 keys, per row", 0.25, "ratio"),
    "batch_bandwidth": ("batch get payload, % of memcpy", 50.0, "minimum"),
}

BATCH = 1000


def _measure_batch(
    contenders: list[_Contender], inp: _Inputs, repeats: int
) -> tuple[dict[str, Samples], Samples]:
    """Per-row cost of fetching BATCH random keys into one (BATCH, dim) matrix:
    embcache's get_many against each peer's loop of gets plus np.stack; and the
    cost of a plain memcpy (np.copyto) of the same payload, per row."""
    batch = inp.hit_keys[:BATCH]
    per_row: dict[str, Samples] = {}
    for c in contenders:
        cache = c.factory(len(inp.put_pairs))
        time_calls2(cache.put, inp.put_pairs)
        samples = per_row[c.name] = Samples()
        if c.name == "embcache":
            get_many = cache.get_many
            get_many(batch)
            for _ in range(repeats):
                with gc_paused():
                    t0 = time.perf_counter_ns()
                    get_many(batch)
                    samples.add(time.perf_counter_ns() - t0, len(batch))
        else:
            get = cache.get
            np.stack([get(k) for k in batch])
            for _ in range(repeats):
                with gc_paused():
                    t0 = time.perf_counter_ns()
                    np.stack([get(k) for k in batch])
                    samples.add(time.perf_counter_ns() - t0, len(batch))
        del cache
    src = np.stack(inp.vectors * (BATCH // len(inp.vectors) + 1))[:BATCH]
    dst = np.empty_like(src)
    memcpy = Samples()
    for _ in range(repeats * 3):
        t0 = time.perf_counter_ns()
        np.copyto(dst, src)
        memcpy.add(time.perf_counter_ns() - t0, BATCH)
    return per_row, memcpy


def run_compare(cfg: CheckConfig, progress: Progress) -> Comparison:
    """Measure embcache and every installed peer side by side (ns/op, best of
    repeats; repeats interleave the contenders so drift affects all alike)."""
    dim, ops, repeats = cfg.dim, cfg.compare_ops, cfg.compare_repeats
    peers = available_peers()
    from embcache._peers import PEERS

    missing = [name for name in PEERS if name not in peers]
    steps = 5
    progress.step(f"[compare 1/{steps}] building {ops:,} keys and vectors (dim {dim})")
    inp = _make_inputs(dim, ops)

    def embcache_factory(capacity: int) -> SyncEmbeddingCache:
        return SyncEmbeddingCache(capacity, None, _budget_mb(capacity, dim), dim=dim)

    def peer_factory(name: str) -> Callable[[int], Any]:
        return lambda capacity: make_peer(name, capacity)

    contenders = [_Contender("embcache", embcache_factory)]
    contenders += [_Contender(p, peer_factory(p)) for p in peers]
    progress.step(
        f"[compare 2/{steps}] put/get/miss/full-put: embcache vs {', '.join(peers) or 'no peers'}"
        f", {repeats} repeats"
    )
    for c in contenders:  # warm-up round, not recorded
        _measure_round(_Contender(c.name, c.factory), inp, c.name == "embcache")
    for _ in range(repeats):
        for c in contenders:
            _measure_round(c, inp, c.name == "embcache")
    contenders[0].warm = None
    gc.collect()

    progress.step(f"[compare 3/{steps}] bytes per entry")
    n_bytes = cfg.compare_bytes_entries
    peer_bytes = {p: _peer_bytes_per_entry(p, dim, n_bytes, inp.vectors) for p in peers}
    allocated = _embcache_allocated_per_entry(dim, n_bytes, inp.vectors)

    progress.step(f"[compare 4/{steps}] await overhead, CacheKey creation")
    s_sync, s_async = asyncio.run(_await_overhead(inp, repeats))
    keys = _key_creation(ops, repeats)
    progress.step(f"[compare 5/{steps}] batch get of {BATCH:,} keys, memcpy of the same bytes")
    batch_rows, memcpy_rows = _measure_batch(contenders, inp, repeats)
    progress.done()

    by_name = {c.name: c for c in contenders}
    emb = by_name["embcache"]

    def fig(key: str, attr: str) -> Figure:
        label, goal, kind = GOALS[key]
        samples: Samples = getattr(emb, attr)
        detail = {"embcache": samples.as_dict()}
        detail.update({p: getattr(by_name[p], attr).as_dict() for p in peers})
        return Figure(
            key,
            label,
            "ns/op",
            samples.best,
            {p: getattr(by_name[p], attr).best for p in peers},
            goal,
            kind,
            detail,
        )

    figures = [
        fig("put_new", "put_new"),
        fig("get_hit", "get_hit"),
        fig("put_full", "put_full"),
        fig("get_miss", "get_miss"),
    ]
    label, goal, kind = GOALS["bytes_per_entry"]
    figures.append(
        Figure(
            "bytes_per_entry",
            label,
            "bytes",
            float(ENTRY_OVERHEAD_BYTES),
            peer_bytes,
            goal,
            kind,
            {
                "embcache_source": "CacheInfo.entry_overhead_bytes (exact accounting)",
                "embcache_allocated_per_entry": round(allocated, 2),
                "peers_source": f"tracemalloc around filling {n_bytes:,} entries, minus payload",
                "entries": n_bytes,
            },
        )
    )
    label, goal, kind = GOALS["await_overhead"]
    figures.append(
        Figure(
            "await_overhead",
            label,
            "ns",
            s_async.best - s_sync.best,
            {},
            goal,
            kind,
            {"await_get": s_async.as_dict(), "sync_get": s_sync.as_dict()},
        )
    )
    label, goal, kind = GOALS["key_create"]
    figures.append(Figure("key_create", label, "ns", keys.best, {}, goal, kind, keys.as_dict()))
    label, goal, kind = GOALS["batch_get"]
    figures.append(
        Figure(
            "batch_get",
            label,
            "ns/row",
            batch_rows["embcache"].best,
            {p: batch_rows[p].best for p in peers},
            goal,
            kind,
            {name: smp.as_dict() for name, smp in batch_rows.items()},
        )
    )
    row_bytes = dim * 4
    get_many_gbs = row_bytes / batch_rows["embcache"].best
    memcpy_gbs = row_bytes / memcpy_rows.best
    label, goal, kind = GOALS["batch_bandwidth"]
    figures.append(
        Figure(
            "batch_bandwidth",
            label,
            "%",
            100.0 * get_many_gbs / memcpy_gbs,
            {},
            goal,
            kind,
            {
                "get_many_GB_per_s": round(get_many_gbs, 3),
                "memcpy_GB_per_s": round(memcpy_gbs, 3),
                "memcpy": memcpy_rows.as_dict(),
                "payload_bytes": BATCH * row_bytes,
            },
        )
    )
    # informational: put of new keys into a brand-new cache, no goal
    cold = fig("put_new", "put_cold")
    cold.key, cold.label = "put_new_cold", "(put, new key, new cache)"
    cold.goal_kind, cold.goal = "info", 0.0
    figures.append(cold)

    notes = [
        "ns/op: best of the repeats; each repeat times the whole pre-shuffled key list once, "
        "gc disabled, loop overhead included for every contender (nothing subtracted).",
        f"embcache is SyncEmbeddingCache(dim={dim}); peers copy vectors in and out "
        "(embcache._peers), keyed by the same CacheKey objects.",
        "put, new key: embcache reuses one cleared cache, peers are rebuilt each repeat "
        "(allocator memory already warm); '(put, new key, new cache)' times a brand-new "
        "cache for every contender, where embcache touches fresh slab pages.",
        f"bytes/entry: embcache = accounted entry_overhead_bytes (allocated per entry beyond "
        f"payload when full: {allocated:.1f} B); peers = tracemalloc.",
        f"batch get: embcache get_many({BATCH:,} random keys) into one matrix vs each peer's "
        f"loop of {BATCH:,} gets + np.stack; % of memcpy = get_many payload bytes/s over "
        "np.copyto of the same bytes (contiguous, same size), both best of repeats.",
        "Goals are not floors: a goal marked FAIL here does not change the exit code.",
    ]
    if missing:
        notes.append("not installed, skipped: " + ", ".join(missing))
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
        peers=peers,
        missing_peers=missing,
        figures=figures,
        method="best of repeats",
        notes=notes,
    )


# --- output -------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows as aligned text columns; indices in `right` are right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _format_criteria(report: Report) -> list[str]:
    """The criteria table, the scaling detail and the overall verdict."""
    rows: list[list[str]] = []
    for crit in report.criteria:
        for i, chk in enumerate(crit.checks):
            label = f"{crit.name}: {chk.label}" if i == 0 else f"    {chk.label}"
            number = str(crit.number) if i == 0 else ""
            rows.append([number, label, chk.threshold, chk.measured, _verdict(chk.passed)])
    cfg = report.config
    out = [
        f"embcache check: the seed task's success criteria (dim {cfg.dim}"
        f"{', quick' if cfg.quick else ''})",
        "",
        *_table(["#", "criterion", "threshold", "measured", "verdict"], rows, set()),
    ]
    scaling = next((c for c in report.criteria if c.number == 4), None)
    if scaling is not None:
        d = scaling.details
        workers = [str(w) for w in WORKER_COUNTS]
        srows = [
            ["asyncio tasks", *(f"{d['asyncio_ns_per_op'][w]:,.0f}" for w in workers)],
            ["OS threads", *(f"{d['threads_ns_per_op'][w]:,.0f}" for w in workers)],
        ]
        out += [
            "",
            f"concurrent access: ns per op, median of {d['rounds']['asyncio']} (tasks) / "
            f"{d['rounds']['threads']} (threads) rounds; each worker puts a new key, then gets it,",
            f"{OPS_PER_WORKER} ops per asyncio task, {OPS_PER_THREAD} per OS thread. "
            "Linear scaling = flat per-op cost;",
            f"the {SCALING_FACTOR:.0f}x bound leaves room for fixed per-round costs and scheduler "
            "noise, and still catches contention that grows with the number of workers.",
            *_table(["workers", *workers], srows, set(range(1, len(workers) + 1))),
        ]
    failed = [str(c.number) for c in report.criteria if not c.passed]
    n = len(report.criteria)
    if failed:
        out += [
            "",
            f"RESULT: FAIL ({n - len(failed)}/{n} criteria pass; failed: {', '.join(failed)})",
        ]
    else:
        out += ["", f"RESULT: PASS ({n}/{n} criteria pass)"]
    out.append(f"(measured in {report.seconds:.1f} s)")
    return out


def _fmt_figure(x: float, fine: bool) -> str:
    """A comparison value: one decimal for small ns/bytes figures, else whole."""
    return f"{x:,.1f}" if fine and abs(x) < 100 else f"{x:,.0f}"


def _format_comparison(cmp: Comparison) -> list[str]:
    """The side-by-side table and its notes."""
    peers = cmp.peers
    rows: list[list[str]] = []
    for f in cmp.figures:
        fine = f.unit in ("ns", "bytes", "%")
        cells = [f.label, _fmt_figure(f.embcache, fine)]
        cells += [_fmt_figure(f.peers[p], fine) if p in f.peers else "-" for p in peers]
        ratio = f.ratio
        cells.append("-" if ratio is None else f"{ratio:.2f} ({f.best_peer})")
        if f.goal_kind == "ratio":
            cells.append(f"<= {f.goal:.2f}x")
        elif f.goal_kind == "absolute":
            cells.append(f"<= {f.goal:.0f}")
        elif f.goal_kind == "minimum":
            cells.append(f">= {f.goal:.0f}")
        else:
            cells.append("")
        met = f.goal_met if f.goal_kind != "info" else None
        cells.append("" if f.goal_kind == "info" else ("n/a" if met is None else _verdict(met)))
        rows.append(cells)
    header = ["figure", "embcache", *peers, "embcache/best peer", "goal", "goal met"]
    right = set(range(1, 2 + len(peers)))
    return [
        "",
        f"comparison at dim {cmp.dim}: ns/op unless noted, lower is better; "
        f"{cmp.ops:,} random-order keys per run, best of {cmp.repeats} runs",
        "",
        *_table(header, rows, right),
        "",
        *(f"note: {n}" for n in cmp.notes),
    ]


def format_report(report: Report) -> str:
    """The human-readable report: criteria table and, if measured, comparison."""
    lines = _format_criteria(report)
    if report.comparison is not None:
        lines += _format_comparison(report.comparison)
    return "\n".join(lines) + "\n"


def report_to_json(report: Report) -> dict[str, Any]:
    """Everything in the report as JSON-serialisable data."""
    return {
        "tool": "embcache check",
        "passed": report.passed,
        "verdict": _verdict(report.passed),
        "exit_code": 0 if report.passed else 1,
        "seconds": round(report.seconds, 3),
        "config": report.config.as_dict(),
        "machine": report.machine,
        "criteria": [c.as_dict() for c in report.criteria],
        "comparison": None if report.comparison is None else report.comparison.as_dict(),
    }


def run(cfg: CheckConfig, compare: bool, progress_stream: TextIO | None) -> Report:
    """Run the criteria (and the comparison when asked) and return the report;
    progress goes to `progress_stream` (None: silent)."""
    progress = Progress(progress_stream)
    t0 = time.perf_counter()
    criteria = run_check(cfg, progress)
    seconds = time.perf_counter() - t0
    comparison = run_compare(cfg, progress) if compare else None
    return Report(cfg, criteria, machine_info(), comparison, seconds)
