"""get_or_compute with single-flight loading (embcache.flight.registry), on the real cache:
the synchronous twin (SyncEmbeddingCache, threads) and the async one
(EmbeddingCache, tasks). Every wait in these tests has a timeout, so a
single-flight bug fails a test instead of hanging the suite."""

from __future__ import annotations

import asyncio
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import pytest
from conftest import key, vec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embcache import (
    CacheKey,
    DimensionMismatchError,
    EmbeddingCache,
    InvalidVectorError,
    KeyTypeError,
    SyncEmbeddingCache,
    VectorTypeError,
)
from embcache.flight.registry import flights_of

TIMEOUT = 10.0  # seconds; only reached when something hangs
DIM = 4

# what error messages call the result of compute(missing_keys)
OUT = r"^compute\(missing\)"


def number(k: CacheKey) -> int:
    """i of key(i)."""
    return int(k.content_hash.split("-", 1)[1])


def rows(keys: Sequence[CacheKey], dim: int = DIM) -> np.ndarray:
    """The vectors the test computes use: row of key(i) is vec(i)."""
    if not keys:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([vec(number(k), dim) for k in keys])


class Recorder:
    """A synchronous compute that returns rows(keys) and records each call."""

    def __init__(self, dim: int = DIM, delay: float = 0.0) -> None:
        self.dim = dim
        self.delay = delay
        self.calls: list[list[CacheKey]] = []
        self.lock = threading.Lock()

    def __call__(self, keys: list[CacheKey]) -> np.ndarray:
        assert isinstance(keys, list)
        with self.lock:
            self.calls.append(list(keys))
        if self.delay:
            time.sleep(self.delay)
        return rows(keys, self.dim)

    def computed(self) -> Counter[CacheKey]:
        return Counter(k for call in self.calls for k in call)


class AsyncRecorder(Recorder):
    """An async compute: awaits `gate` (when set) and `delay` before answering."""

    def __init__(self, dim: int = DIM, delay: float = 0.0) -> None:
        super().__init__(dim, delay)
        self.started = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def __call__(self, keys: list[CacheKey]) -> np.ndarray:  # type: ignore[override]
        self.calls.append(list(keys))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        return rows(keys, self.dim)


def run(coro: Any) -> Any:
    """asyncio.run with a timeout."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


def in_thread(fn: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """fn() in a daemon thread, failing the test if it does not finish in time."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "get_or_compute hung"
    if "error" in box:
        raise box["error"]
    return box["result"]


def stats(cache: Any) -> tuple[int, int]:
    info = getattr(cache, "sync", cache).get_cache_info()
    return info.hits, info.misses


def no_keys_in_flight(cache: EmbeddingCache | SyncEmbeddingCache) -> bool:
    """No key of the cache is registered as being computed."""
    return flights_of(getattr(cache, "sync", cache)).in_flight() == 0


def not_stuck(cache: SyncEmbeddingCache, keys: list[CacheKey]) -> bool:
    """Asking for `keys` now completes at once and computes the missing ones (a key
    left registered as in flight would make it wait forever). Stores them."""
    missing = [k for k in dict.fromkeys(keys) if k not in cache]
    compute = Recorder()
    m = in_thread(lambda: cache.get_or_compute(keys, compute), timeout=2.0)
    assert compute.calls == ([missing] if missing else [])
    return bool(np.array_equal(m, rows(keys)) or not missing)


@pytest.fixture
def sync() -> SyncEmbeddingCache:
    return SyncEmbeddingCache(max_entries=10_000, max_memory_mb=64.0)


# --- correctness: the sync twin ---------------------------------------------------------


def test_matches_the_single_key_api(sync: SyncEmbeddingCache) -> None:
    keys = [key(i) for i in range(8)]
    for i in (1, 4, 6):
        sync.put(keys[i], vec(i) * 2)  # stored rows differ from what compute makes
    compute = Recorder()
    m = sync.get_or_compute(keys, compute)
    assert m.dtype == np.float32 and m.shape == (8, DIM) and m.flags.c_contiguous
    for i, k in enumerate(keys):
        got = sync.get(k)
        assert got is not None
        np.testing.assert_array_equal(m[i], got)
        np.testing.assert_array_equal(m[i], vec(i) * (2 if i in (1, 4, 6) else 1))
    assert compute.calls == [[keys[i] for i in (0, 2, 3, 5, 7)]]
    sync._check_invariants()


def test_all_hits_never_call_compute(sync: SyncEmbeddingCache) -> None:
    keys = [key(i) for i in range(5)]
    sync.put_many(keys, rows(keys))
    compute = Recorder()
    m = sync.get_or_compute(keys[::-1] + keys, compute)
    np.testing.assert_array_equal(m, rows(keys[::-1] + keys))
    assert compute.calls == []


def test_duplicates_and_order(sync: SyncEmbeddingCache) -> None:
    keys = [key(i) for i in (3, 1, 3, 2, 1, 1, 9, 3)]
    sync.put(key(2), vec(2))
    compute = Recorder()
    m = sync.get_or_compute(keys, compute)
    np.testing.assert_array_equal(m, rows(keys))
    # distinct misses, in first-occurrence order, in a single call
    assert compute.calls == [[key(3), key(1), key(9)]]
    assert len(sync) == 4


def test_compute_gets_a_fresh_list_each_time(sync: SyncEmbeddingCache) -> None:
    seen: list[Any] = []

    def compute(keys: list[CacheKey]) -> np.ndarray:
        seen.append(keys)
        out = rows(keys)
        keys.clear()  # the list is the caller's to keep or spoil
        return out

    m = sync.get_or_compute((key(1), key(2)), compute)
    np.testing.assert_array_equal(m, rows([key(1), key(2)]))
    assert type(seen[0]) is list and len(sync) == 2


def test_returned_matrix_is_private(sync: SyncEmbeddingCache) -> None:
    compute = Recorder()
    m = sync.get_or_compute([key(1), key(2)], compute)
    m[:] = -1.0
    np.testing.assert_array_equal(
        sync.get_or_compute([key(1), key(2)], compute), rows([key(1), key(2)])
    )

    def aliasing(keys: list[CacheKey]) -> np.ndarray:
        return buffer[: len(keys)]

    buffer = rows([key(7), key(8)]).astype(np.float64)
    sync.get_or_compute([key(7), key(8)], aliasing)
    buffer[:] = 0.0  # the caller reusing its buffer changes nothing stored
    np.testing.assert_array_equal(sync.get(key(7)), vec(7))


def test_stats_count_each_key_once(sync: SyncEmbeddingCache) -> None:
    keys = [key(i) for i in (0, 1, 2, 1, 5)]
    sync.put(key(1), vec(1))
    before = stats(sync)
    sync.get_or_compute(keys, Recorder())
    hits, misses = stats(sync)
    assert (hits - before[0], misses - before[1]) == (2, 3)
    sync.get_or_compute(keys, Recorder())
    assert stats(sync) == (hits + 5, misses)


def test_empty_keys(sync: SyncEmbeddingCache) -> None:
    compute = Recorder()
    assert sync.get_or_compute([], compute).shape == (0, 0)
    fixed = SyncEmbeddingCache(dim=8)
    out = fixed.get_or_compute((), compute)
    assert out.shape == (0, 8) and out.dtype == np.float32
    assert compute.calls == []


def test_dim_comes_from_compute_when_nothing_is_cached(sync: SyncEmbeddingCache) -> None:
    m = sync.get_or_compute([key(1), key(1), key(2)], Recorder(dim=3))
    assert m.shape == (3, 3)
    np.testing.assert_array_equal(m, rows([key(1), key(1), key(2)], 3))


def test_any_real_dtype_becomes_float32(sync: SyncEmbeddingCache) -> None:
    m = sync.get_or_compute([key(1), key(2)], lambda ks: [[1, 2, 3], [4, 5, 6]])
    assert m.dtype == np.float32
    np.testing.assert_array_equal(m, [[1, 2, 3], [4, 5, 6]])
    strided = np.arange(24, dtype=np.float64).reshape(4, 6)[::2, ::2]
    m = sync.get_or_compute([key(3), key(4)], lambda ks: strided)
    np.testing.assert_array_equal(m, strided)
    np.testing.assert_array_equal(sync.get(key(4)), strided[1])


def test_large_batch(sync: SyncEmbeddingCache) -> None:
    keys = [key(i) for i in range(5000)]
    sync.put_many(keys[::3], rows(keys[::3], 64))
    compute = Recorder(dim=64)
    m = sync.get_or_compute(keys, compute)
    np.testing.assert_array_equal(m, rows(keys, 64))
    assert len(compute.calls[0]) == 5000 - len(keys[::3])


# --- correctness: the async cache ---------------------------------------------------------


def test_async_matches_sync_semantics() -> None:
    async def main() -> None:
        cache = EmbeddingCache(max_entries=1000)
        await cache.put(key(2), vec(2) * 5)
        keys = [key(i) for i in (1, 2, 3, 1, 2)]
        acompute = AsyncRecorder()
        m = await cache.get_or_compute(keys, acompute)
        expected = rows(keys)
        expected[[1, 4]] = vec(2) * 5
        np.testing.assert_array_equal(m, expected)
        assert acompute.calls == [[key(1), key(3)]]
        # a synchronous compute works on the async cache as well
        compute = Recorder()
        m = await cache.get_or_compute([key(7), key(1)], compute)
        np.testing.assert_array_equal(m, rows([key(7), key(1)]))
        assert compute.calls == [[key(7)]]
        # and so does a plain callable that returns an awaitable
        m = await cache.get_or_compute([key(8)], lambda ks: acompute(ks))
        np.testing.assert_array_equal(m, rows([key(8)]))
        assert stats(cache) == (3, 5)
        assert (await cache.get_or_compute([], compute)).shape == (0, 0)

    run(main())


def test_fifty_coroutines_compute_each_key_once() -> None:
    rng = random.Random(4)
    requests = [[key(rng.randrange(120)) for _ in range(rng.randrange(1, 40))] for _ in range(50)]

    async def main() -> None:
        cache = EmbeddingCache(max_entries=1000)
        await cache.put_many(
            [key(i) for i in range(0, 120, 10)], rows([key(i) for i in range(0, 120, 10)])
        )
        computed: Counter[CacheKey] = Counter()
        calls = 0

        async def compute(keys: list[CacheKey]) -> np.ndarray:
            nonlocal calls
            calls += 1
            assert len(set(keys)) == len(keys)
            computed.update(keys)
            await asyncio.sleep(rng.random() * 0.01)
            return rows(keys)

        def sync_compute(keys: list[CacheKey]) -> np.ndarray:
            computed.update(keys)
            return rows(keys)

        async def one(i: int, keys: list[CacheKey]) -> np.ndarray:
            await asyncio.sleep(rng.random() * 0.005)
            return await cache.get_or_compute(keys, sync_compute if i % 7 == 0 else compute)

        before = stats(cache)
        results = await asyncio.gather(*(one(i, keys) for i, keys in enumerate(requests)))
        for keys, m in zip(requests, results):
            np.testing.assert_array_equal(m, rows(keys))
        wanted = {k for keys in requests for k in keys} - {key(i) for i in range(0, 120, 10)}
        assert computed == Counter(wanted)  # each distinct missing key exactly once
        hits, misses = stats(cache)
        assert hits - before[0] + misses - before[1] == sum(map(len, requests))
        assert no_keys_in_flight(cache)
        cache.sync._check_invariants()

    run(main())


def test_async_waiters_get_the_owners_validation_error() -> None:
    async def main() -> None:
        cache = EmbeddingCache()
        gate = asyncio.Event()

        async def short(keys: list[CacheKey]) -> np.ndarray:
            await gate.wait()
            return rows(keys)[:-1]

        owner = asyncio.create_task(cache.get_or_compute([key(1), key(2)], short))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(cache.get_or_compute([key(2)], Recorder()))
        await asyncio.sleep(0.01)
        gate.set()
        for task in (owner, waiter):
            with pytest.raises(InvalidVectorError, match=OUT + r" has 1 rows for 2 keys"):
                await task
        assert len(cache) == 0 and no_keys_in_flight(cache)

    run(main())


def test_async_waiter_gets_the_owners_rows() -> None:
    async def main() -> None:
        cache = EmbeddingCache()
        owner = AsyncRecorder()
        owner.gate = asyncio.Event()
        first = asyncio.create_task(cache.get_or_compute([key(1), key(2)], owner))
        await owner.started.wait()
        waiter = AsyncRecorder()
        second = asyncio.create_task(cache.get_or_compute([key(2), key(3), key(1)], waiter))
        await asyncio.sleep(0.01)
        assert waiter.calls == [[key(3)]]  # computed its own key at once, waits for 1 and 2
        assert not second.done()
        owner.gate.set()
        np.testing.assert_array_equal(await second, rows([key(2), key(3), key(1)]))
        np.testing.assert_array_equal(await first, rows([key(1), key(2)]))
        assert owner.calls == [[key(1), key(2)]]

    run(main())


# --- errors in flight ------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_async_exception_reaches_every_waiter_and_nothing_is_stored() -> None:
    async def main() -> None:
        cache = EmbeddingCache()
        gate = asyncio.Event()
        started = asyncio.Event()
        calls = 0

        async def failing(keys: list[CacheKey]) -> np.ndarray:
            nonlocal calls
            calls += 1
            started.set()
            await gate.wait()
            raise Boom("model down")

        owner = asyncio.create_task(cache.get_or_compute([key(1), key(2)], failing))
        await started.wait()
        waiters = [
            asyncio.create_task(cache.get_or_compute(ks, Recorder()))
            for ks in ([key(1)], [key(2), key(1)], [key(2), key(9)])
        ]
        await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(owner, *waiters, return_exceptions=True)
        assert all(isinstance(r, Boom) for r in results), results
        assert calls == 1
        assert key(1) not in cache and key(2) not in cache
        assert key(9) in cache  # the third caller's own key was computed and stored
        assert no_keys_in_flight(cache)
        # a later call tries again
        again = Recorder()
        np.testing.assert_array_equal(
            await cache.get_or_compute([key(1), key(2)], again), rows([key(1), key(2)])
        )
        assert again.calls == [[key(1), key(2)]]

    run(main())


def test_sync_exception_then_retry(sync: SyncEmbeddingCache) -> None:
    def failing(keys: list[CacheKey]) -> np.ndarray:
        raise Boom("no")

    sync.put(key(0), vec(0))
    with pytest.raises(Boom):
        sync.get_or_compute([key(0), key(1)], failing)
    assert key(1) not in sync and len(sync) == 1
    assert not_stuck(sync, [key(1)])
    np.testing.assert_array_equal(sync.get_or_compute([key(1)], Recorder()), rows([key(1)]))


def test_threads_all_waiters_get_the_exception(sync: SyncEmbeddingCache) -> None:
    sync.get_or_compute([], Recorder())  # flights exist before the threads race
    entered = threading.Event()
    release = threading.Event()

    def failing(keys: list[CacheKey]) -> np.ndarray:
        entered.set()
        release.wait(TIMEOUT)
        raise Boom("model down")

    outcomes: list[Any] = [None] * 5

    def call(i: int) -> None:
        try:
            outcomes[i] = sync.get_or_compute([key(1), key(2)], failing if i == 0 else Recorder())
        except Boom as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=call, args=(0,), daemon=True)]
    threads[0].start()
    assert entered.wait(TIMEOUT)
    threads += [threading.Thread(target=call, args=(i,), daemon=True) for i in range(1, 5)]
    for t in threads[1:]:
        t.start()
    time.sleep(0.05)
    release.set()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive()
    assert all(isinstance(o, Boom) for o in outcomes), outcomes
    assert len(sync) == 0 and not_stuck(sync, [key(1), key(2)])


# --- cancellation ----------------------------------------------------------------------------


def test_cancelling_a_waiter_cancels_nothing_else() -> None:
    async def main() -> None:
        cache = EmbeddingCache()
        owner = AsyncRecorder()
        owner.gate = asyncio.Event()
        first = asyncio.create_task(cache.get_or_compute([key(1), key(2)], owner))
        await owner.started.wait()
        doomed = asyncio.create_task(cache.get_or_compute([key(1)], Recorder()))
        other = asyncio.create_task(cache.get_or_compute([key(2), key(1)], Recorder()))
        await asyncio.sleep(0.01)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await asyncio.sleep(0.01)
        assert not first.done() and not other.done()
        owner.gate.set()
        np.testing.assert_array_equal(await first, rows([key(1), key(2)]))
        np.testing.assert_array_equal(await other, rows([key(2), key(1)]))
        assert owner.calls == [[key(1), key(2)]]
        assert no_keys_in_flight(cache)

    run(main())


def test_cancelling_the_owner_leaves_no_key_stuck() -> None:
    async def main() -> None:
        cache = EmbeddingCache()
        owner = AsyncRecorder()
        owner.gate = asyncio.Event()  # never set: the owner only ever gets cancelled
        first = asyncio.create_task(cache.get_or_compute([key(1), key(2), key(3)], owner))
        await owner.started.wait()
        computes = [AsyncRecorder(delay=0.005) for _ in range(4)]
        waiters = [
            asyncio.create_task(cache.get_or_compute([key(2), key(1)], computes[0])),
            asyncio.create_task(cache.get_or_compute([key(1), key(4)], computes[1])),
            asyncio.create_task(cache.get_or_compute([key(1)], computes[2])),
            asyncio.create_task(cache.get_or_compute([key(3), key(1)], computes[3])),
        ]
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # no waiter sees the owner's cancellation; they take over the keys
        results = await asyncio.gather(*waiters)
        for m, ks in zip(results, ([2, 1], [1, 4], [1], [3, 1])):
            np.testing.assert_array_equal(m, rows([key(i) for i in ks]))
        computed = Counter(k for c in computes for call in c.calls for k in call)
        assert computed == Counter([key(1), key(2), key(3), key(4)])  # each once more
        assert no_keys_in_flight(cache)
        # and a later call completes at once, from the cache
        never = Recorder()
        await cache.get_or_compute([key(1), key(2), key(3)], never)
        assert never.calls == []

    run(main())


def test_cancelling_the_owner_with_no_waiters() -> None:
    async def main() -> None:
        cache = EmbeddingCache()
        owner = AsyncRecorder()
        owner.gate = asyncio.Event()
        task = asyncio.create_task(cache.get_or_compute([key(1)], owner))
        await owner.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert key(1) not in cache and no_keys_in_flight(cache)
        np.testing.assert_array_equal(
            await cache.get_or_compute([key(1)], Recorder()), rows([key(1)])
        )

    run(main())


def test_timeout_on_a_waiter_is_a_cancellation() -> None:
    async def main() -> None:
        cache = EmbeddingCache()
        owner = AsyncRecorder()
        owner.gate = asyncio.Event()
        first = asyncio.create_task(cache.get_or_compute([key(1)], owner))
        await owner.started.wait()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(cache.get_or_compute([key(1)], Recorder()), 0.01)
        owner.gate.set()
        np.testing.assert_array_equal(await first, rows([key(1)]))

    run(main())


class Abort(BaseException):
    """Stands for KeyboardInterrupt / SystemExit inside a thread's compute."""


def test_thread_owner_dying_hands_the_keys_to_a_waiter(sync: SyncEmbeddingCache) -> None:
    sync.get_or_compute([], Recorder())
    entered = threading.Event()
    release = threading.Event()

    def dying(keys: list[CacheKey]) -> np.ndarray:
        entered.set()
        release.wait(TIMEOUT)
        raise Abort

    def owner() -> None:
        with pytest.raises(Abort):
            sync.get_or_compute([key(1), key(2)], dying)

    t = threading.Thread(target=owner, daemon=True)
    t.start()
    assert entered.wait(TIMEOUT)
    waiter = Recorder()
    threading.Timer(0.05, release.set).start()
    m = in_thread(lambda: sync.get_or_compute([key(2), key(3)], waiter))
    t.join(TIMEOUT)
    np.testing.assert_array_equal(m, rows([key(2), key(3)]))
    assert waiter.calls == [[key(3)], [key(2)]]  # its own key, then the orphaned one
    assert key(1) not in sync and not_stuck(sync, [key(1), key(2)])


# --- threads -----------------------------------------------------------------------------------


def test_sixteen_threads_compute_each_key_once() -> None:
    cache = SyncEmbeddingCache(max_entries=10_000, max_memory_mb=16.0)
    cache.get_or_compute([], Recorder())  # flights exist before the threads race
    rng = random.Random(16)
    requests = [[key(rng.randrange(60)) for _ in range(rng.randrange(1, 30))] for _ in range(64)]
    compute = Recorder(delay=0.005)  # slow enough that threads overlap
    results: list[Any] = [None] * len(requests)
    barrier = threading.Barrier(16)

    def worker(w: int) -> None:
        barrier.wait(TIMEOUT)
        for i in range(w, len(requests), 16):
            results[i] = cache.get_or_compute(requests[i], compute)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive()
    for ks, m in zip(requests, results):
        np.testing.assert_array_equal(m, rows(ks))
    assert compute.computed() == Counter({k for ks in requests for k in ks})
    hits, misses = stats(cache)
    assert hits + misses >= sum(map(len, requests))
    assert misses <= sum(map(len, requests))
    cache._check_invariants()


def test_first_concurrent_calls_share_one_flight() -> None:
    """The very first get_or_compute calls of a cache, racing from several threads,
    must use one flight registry (it has to exist before they can race for it)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        duplicated = 0
        for _ in range(40):
            cache = SyncEmbeddingCache()
            compute = Recorder(delay=0.002)
            barrier = threading.Barrier(8)

            def worker(
                c: SyncEmbeddingCache = cache,
                f: Recorder = compute,
                b: threading.Barrier = barrier,
            ) -> None:
                b.wait(TIMEOUT)
                c.get_or_compute([key(1)], f)

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(TIMEOUT)
            duplicated += len(compute.calls) > 1
    finally:
        sys.setswitchinterval(old)
    assert duplicated == 0, f"{duplicated}/40 cold starts computed the key more than once"


def test_a_key_stored_between_lookup_and_claim_is_not_computed_again() -> None:
    """A thread whose lookup missed a key that another thread then stored and
    released before this one claimed it must take the stored rows, not compute
    the key a second time. Staggered starts make that window come up."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    rng = random.Random(7)
    try:
        duplicated = 0
        for _ in range(250):
            cache = SyncEmbeddingCache()
            cache.get_or_compute([], Recorder())
            compute = Recorder(delay=0.0002)
            delays = [rng.random() * 0.0006 for _ in range(6)]

            def worker(d: float, c: SyncEmbeddingCache = cache, f: Recorder = compute) -> None:
                time.sleep(d)
                np.testing.assert_array_equal(
                    c.get_or_compute([key(1), key(2)], f), rows([key(1), key(2)])
                )

            threads = [threading.Thread(target=worker, args=(d,), daemon=True) for d in delays]
            for t in threads:
                t.start()
            for t in threads:
                t.join(TIMEOUT)
            duplicated += sum(compute.computed().values()) > 2
    finally:
        sys.setswitchinterval(old)
    assert duplicated == 0


def test_threads_and_a_shared_async_cache_on_several_loops() -> None:
    cache = EmbeddingCache(max_entries=1000)
    compute = Recorder()
    errors: list[BaseException] = []

    def loop_thread(offset: int) -> None:
        async def main() -> None:
            ks = [key(i) for i in range(offset, offset + 20)]
            m = await asyncio.gather(*(cache.get_or_compute(ks, compute) for _ in range(5)))
            for x in m:
                np.testing.assert_array_equal(x, rows(ks))

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=loop_thread, args=(o,), daemon=True) for o in (0, 100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors
    assert len(cache) == 40


# --- re-entrancy -------------------------------------------------------------------------------


def test_async_compute_may_use_the_cache_for_other_keys() -> None:
    async def main() -> None:
        cache = EmbeddingCache()
        await cache.put(key(100), vec(100))

        async def compute(keys: list[CacheKey]) -> np.ndarray:
            assert await cache.get(key(100)) is not None
            await cache.put(key(101), vec(101))
            m, found = await cache.get_many([key(100), key(101)])
            assert found.all()
            inner = await cache.get_or_compute([key(200), key(100)], Recorder())
            np.testing.assert_array_equal(inner, rows([key(200), key(100)]))
            return rows(keys)

        m = await cache.get_or_compute([key(1), key(2)], compute)
        np.testing.assert_array_equal(m, rows([key(1), key(2)]))
        assert key(200) in cache

    run(main())


def test_async_compute_asking_for_its_own_key_raises() -> None:
    async def main() -> None:
        cache = EmbeddingCache()

        async def compute(keys: list[CacheKey]) -> np.ndarray:
            await cache.get_or_compute([key(9), key(2)], Recorder())
            return rows(keys)

        with pytest.raises(RuntimeError, match="inside the compute that is computing it"):
            await cache.get_or_compute([key(1), key(2)], compute)
        assert len(cache) == 0 and no_keys_in_flight(cache)

    run(main())


def test_sync_compute_may_use_the_cache_for_other_keys(sync: SyncEmbeddingCache) -> None:
    sync.put(key(100), vec(100))

    def compute(keys: list[CacheKey]) -> np.ndarray:
        assert sync.get(key(100)) is not None
        sync.put(key(101), vec(101))
        assert sync.get_many([key(100), key(101)])[1].all()
        np.testing.assert_array_equal(sync.get_or_compute([key(200)], Recorder()), rows([key(200)]))
        return rows(keys)

    m = in_thread(lambda: sync.get_or_compute([key(1), key(2)], compute))
    np.testing.assert_array_equal(m, rows([key(1), key(2)]))


def test_sync_compute_asking_for_its_own_key_raises(sync: SyncEmbeddingCache) -> None:
    def compute(keys: list[CacheKey]) -> np.ndarray:
        sync.get_or_compute([key(2)], Recorder())
        return rows(keys)

    with pytest.raises(RuntimeError, match="inside the compute that is computing it"):
        in_thread(lambda: sync.get_or_compute([key(1), key(2)], compute))
    assert len(sync) == 0 and not_stuck(sync, [key(1), key(2)])


def test_async_computes_waiting_on_each_other_raise_instead_of_deadlocking() -> None:
    async def main() -> None:
        cache = EmbeddingCache()
        started = [asyncio.Event(), asyncio.Event()]

        def compute_for(me: int, other_key: CacheKey) -> Callable[[list[CacheKey]], Any]:
            async def compute(keys: list[CacheKey]) -> np.ndarray:
                started[me].set()
                await started[1 - me].wait()
                await cache.get_or_compute([other_key], Recorder())
                return rows(keys)

            return compute

        results = await asyncio.gather(
            cache.get_or_compute([key(1)], compute_for(0, key(2))),
            cache.get_or_compute([key(2)], compute_for(1, key(1))),
            return_exceptions=True,
        )
        assert all(isinstance(r, RuntimeError) for r in results), results
        assert no_keys_in_flight(cache)

    run(main())


def test_thread_computes_waiting_on_each_other_raise_instead_of_deadlocking(
    sync: SyncEmbeddingCache,
) -> None:
    sync.get_or_compute([], Recorder())
    both = threading.Barrier(2)

    def compute_for(other_key: CacheKey) -> Callable[[list[CacheKey]], Any]:
        def compute(keys: list[CacheKey]) -> np.ndarray:
            both.wait(TIMEOUT)
            sync.get_or_compute([other_key], Recorder())
            return rows(keys)

        return compute

    outcomes: list[Any] = [None, None]

    def call(i: int) -> None:
        try:
            sync.get_or_compute([key(i + 1)], compute_for(key(2 - i)))
        except RuntimeError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "deadlock"
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
    assert not_stuck(sync, [key(1), key(2)])


# --- bad input ------------------------------------------------------------------------------


# every message names compute (the core's `what`) first; the missing keys are key(1), key(2)
BAD_RESULTS = [
    (lambda n: np.ones(n), InvalidVectorError, OUT + r" must be 2-D .*got shape \(2,\)"),
    (lambda n: np.ones((n + 1, DIM)), InvalidVectorError, OUT + r" has 3 rows for 2 keys"),
    (
        lambda n: np.ones((max(n - 1, 0), DIM)),
        InvalidVectorError,
        OUT + r" has 1 rows for 2 keys",
    ),
    (lambda n: np.ones((n, 0)), InvalidVectorError, OUT + r" rows are empty"),
    (
        lambda n: np.ones((n, DIM, 1)),
        InvalidVectorError,
        OUT + r" must be 2-D .*got shape \(2, 4, 1\)",
    ),
    (lambda n: np.full((n, DIM), np.nan), InvalidVectorError, OUT + r"\[0, 0\] is nan"),
    (lambda n: np.full((n, DIM), -np.inf), InvalidVectorError, OUT + r"\[0, 0\] is -inf"),
    (
        lambda n: np.full((n, DIM), 1e300),
        InvalidVectorError,
        OUT + r"\[0, 0\] = 1e\+300 overflows float32",
    ),
    (
        lambda n: np.ones((n, DIM), dtype=complex),
        VectorTypeError,
        OUT + r" must hold real numbers .*complex",
    ),
    (
        lambda n: np.ones((n, DIM), dtype=bool),
        VectorTypeError,
        OUT + r" must hold real numbers .*bool",
    ),
    (
        lambda n: np.array([["a"] * DIM] * n),
        VectorTypeError,
        OUT + r" must hold real numbers .*dtype",
    ),
    (lambda n: "vectors", VectorTypeError, OUT + r" must be a 2-D array-like .*got str"),
    (lambda n: None, VectorTypeError, OUT + r" is missing \(got None\)"),
    (lambda n: [[1.0, 2.0], [3.0]], InvalidVectorError, OUT + r" could not be read"),
]


@pytest.mark.parametrize(("make", "error", "match"), BAD_RESULTS)
def test_bad_compute_results_store_nothing(make: Any, error: type, match: str) -> None:
    cache = SyncEmbeddingCache(max_entries=100)
    cache.put(key(0), vec(0))
    before = cache.get_cache_info()
    with pytest.raises(error, match=match):
        cache.get_or_compute([key(0), key(1), key(2)], lambda ks: make(len(ks)))
    assert len(cache) == 1 and key(1) not in cache
    assert cache.get_cache_info().puts == before.puts
    assert not_stuck(cache, [key(1), key(2)])
    assert issubclass(error, (ValueError, TypeError))


def test_one_bad_row_stores_no_row(sync: SyncEmbeddingCache) -> None:
    def compute(keys: list[CacheKey]) -> np.ndarray:
        out = rows(keys)
        out[-1, 2] = math.nan
        return out

    with pytest.raises(InvalidVectorError, match=OUT + r"\[2, 2\] is nan"):
        sync.get_or_compute([key(1), key(2), key(3)], compute)
    assert len(sync) == 0


def test_dimension_mismatches() -> None:
    fixed = SyncEmbeddingCache(dim=DIM)
    with pytest.raises(
        DimensionMismatchError, match=OUT + rf" has dim 3, but this cache stores dim {DIM}"
    ):
        fixed.get_or_compute([key(1)], Recorder(dim=3))
    assert len(fixed) == 0
    loose = SyncEmbeddingCache()
    loose.put(key(0), vec(0))
    with pytest.raises(
        DimensionMismatchError, match=OUT + r" has dim 5, but this batch needs dim 4"
    ):
        loose.get_or_compute([key(0), key(1)], Recorder(dim=5))
    assert len(loose) == 1
    # with no hit in the batch, another dimension is fine in a cache without fixed dim
    np.testing.assert_array_equal(
        loose.get_or_compute([key(1)], Recorder(dim=5)), rows([key(1)], 5)
    )
    loose.put(key(2), vec(2, 3))
    with pytest.raises(DimensionMismatchError, match=r"dimensions \((4, 3|3, 4)\)"):
        loose.get_or_compute([key(0), key(2), key(9)], Recorder())


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ([key(1), "k"], r"keys\[1\] must be a CacheKey, got str"),
        ([key(1), None], r"keys\[1\] must be a CacheKey, got NoneType"),
        (key(1), "got a single CacheKey"),
        ("abc", "got str"),
        (42, "got int"),
    ],
)
def test_bad_keys(sync: SyncEmbeddingCache, keys: Any, match: str) -> None:
    compute = Recorder()
    with pytest.raises(KeyTypeError, match=match):
        sync.get_or_compute(keys, compute)

    async def main() -> None:
        with pytest.raises(KeyTypeError, match=match):
            await EmbeddingCache().get_or_compute(keys, compute)

    run(main())
    assert compute.calls == [] and stats(sync) == (0, 0)
    assert issubclass(KeyTypeError, TypeError)


@pytest.mark.parametrize("compute", [None, 3, "compute", np.ones(3)])
def test_compute_must_be_callable(sync: SyncEmbeddingCache, compute: Any) -> None:
    with pytest.raises(TypeError, match="compute must be a callable"):
        sync.get_or_compute([key(1)], compute)

    async def main() -> None:
        with pytest.raises(TypeError, match="compute must be a callable"):
            await EmbeddingCache().get_or_compute([key(1)], compute)

    run(main())
    assert stats(sync) == (0, 0)


def test_sync_twin_refuses_async_compute(sync: SyncEmbeddingCache) -> None:
    async def acompute(keys: list[CacheKey]) -> np.ndarray:
        return rows(keys)

    with pytest.raises(TypeError, match="async function"):
        sync.get_or_compute([key(1)], acompute)
    assert stats(sync) == (0, 0)
    # a plain callable returning a coroutine is found out after the call; the
    # coroutine is closed (no "never awaited" warning) and nothing is stored
    with pytest.raises(TypeError, match="returned an awaitable"):
        sync.get_or_compute([key(1)], lambda ks: acompute(ks))
    assert len(sync) == 0 and not_stuck(sync, [key(1)])


def test_errors_are_builtin_subclasses() -> None:
    assert issubclass(InvalidVectorError, ValueError)
    assert issubclass(DimensionMismatchError, ValueError)
    assert issubclass(VectorTypeError, TypeError)


# --- property: random batches against a dict model ---------------------------------------------


batches = st.lists(st.lists(st.integers(0, 19), max_size=12), min_size=1, max_size=6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(preloaded=st.sets(st.integers(0, 19)), batch_list=batches, use_async=st.booleans())
def test_random_batches_match_a_dict_model(
    preloaded: set[int], batch_list: list[list[int]], use_async: bool
) -> None:
    cache = EmbeddingCache(max_entries=100)
    sync_cache = cache.sync
    model: dict[CacheKey, np.ndarray] = {}
    for i in sorted(preloaded):
        sync_cache.put(key(i), vec(i) + 0.5)  # preloaded rows differ from computed ones
        model[key(i)] = vec(i) + 0.5
    hits = misses = 0
    for batch in batch_list:
        ks = [key(i) for i in batch]
        known = set(model)
        expected_calls = list(dict.fromkeys(k for k in ks if k not in known))
        compute = Recorder()
        if use_async:
            m = run(cache.get_or_compute(ks, compute))
        else:
            m = sync_cache.get_or_compute(ks, compute)
        assert compute.calls == ([expected_calls] if expected_calls else [])
        for k in expected_calls:
            model[k] = vec(number(k))
        if ks:
            np.testing.assert_array_equal(m, np.stack([model[k] for k in ks]))
        assert m.shape == ((len(ks), DIM) if ks else (0, 0)) and m.dtype == np.float32
        hits += sum(k in known for k in ks)
        misses += sum(k not in known for k in ks)
    assert stats(cache) == (hits, misses)
    assert len(sync_cache) == len(model)
    for k, v in model.items():
        np.testing.assert_array_equal(sync_cache.get(k), v)
    sync_cache._check_invariants()


def test_one_registry_serves_threads_and_tasks() -> None:
    """The sync and async entry points of one cache share its registry."""
    cache = EmbeddingCache()
    flights = flights_of(cache.sync)
    m = cache.sync.get_or_compute([key(1), key(1)], Recorder())
    np.testing.assert_array_equal(m, rows([key(1), key(1)]))
    assert flights.in_flight() == 0

    async def main() -> None:
        compute = Recorder()
        m = await cache.get_or_compute([key(2), key(1)], compute)
        np.testing.assert_array_equal(m, rows([key(2), key(1)]))
        assert compute.calls == [[key(2)]] and flights.in_flight() == 0

    run(main())
