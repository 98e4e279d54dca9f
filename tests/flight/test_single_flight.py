"""One single-flight registry per SyncEmbeddingCache, shared by every caller:
threads, asyncio tasks of any loop, and CachedEmbedders (embed and embed_sync).
Cross-kind waiting (a task on a thread's flight, a thread on a task's), deadlock
refusal, and what compute may return (an array-like or PutBatch objects).
Every wait has a timeout, so a bug fails a test instead of hanging the suite."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import threading
import time
import weakref
from collections import Counter
from typing import Any, Callable

import numpy as np
import pytest
from conftest import TIMEOUT, in_threads, key, run, vec

from embcache import (
    CachedEmbedder,
    CacheKey,
    DimensionMismatchError,
    EmbcacheError,
    EmbeddingCache,
    InvalidVectorError,
    SyncEmbeddingCache,
)
from embcache.flight.registry import Flights, flights_of

DIM = 4

# what error messages call the result of compute(missing_keys)
OUT = r"^compute\(missing\)"


def rows(keys: list[CacheKey], dim: int = DIM) -> np.ndarray:
    return np.stack([vec(int(k.content_hash.split("-", 1)[1]), dim) for k in keys])


class Counting:
    """A thread-safe sync compute that counts each key it computes; optionally
    signals `started` and waits for `gate` before answering."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.seen: Counter[CacheKey] = Counter()
        self.calls = 0
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.gate: threading.Event | None = None

    def __call__(self, keys: list[CacheKey]) -> np.ndarray:
        with self.lock:
            self.calls += 1
            self.seen.update(keys)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(TIMEOUT)
        if self.delay:
            time.sleep(self.delay)
        return rows(keys)


# --- one registry per cache -----------------------------------------------------------------


def test_every_cache_has_its_own_registry() -> None:
    a, b = SyncEmbeddingCache(), SyncEmbeddingCache()
    assert isinstance(a.flights, Flights) and isinstance(b.flights, Flights)
    assert a.flights is not b.flights and a.flights is a.flights
    facade = EmbeddingCache()
    assert flights_of(facade.sync) is facade.sync.flights
    assert a.flights.in_flight() == 0


def test_a_registry_serves_its_cache_directly() -> None:
    cache = SyncEmbeddingCache()
    flights = flights_of(cache)
    m = flights.get_or_compute([key(1), key(1)], Counting())
    np.testing.assert_array_equal(m, rows([key(1), key(1)]))

    async def main() -> None:
        m = await flights.get_or_compute_async([key(2), key(1)], Counting())
        np.testing.assert_array_equal(m, rows([key(2), key(1)]))

    run(main())
    assert flights.in_flight() == 0 and len(cache) == 2


def test_a_registry_does_not_keep_its_cache_alive() -> None:
    cache = SyncEmbeddingCache()
    flights = cache.flights
    alive = weakref.ref(cache)
    del cache
    gc.collect()
    assert alive() is None
    with pytest.raises(ReferenceError, match="no longer exists"):
        flights.get_or_compute([key(1)], Counting())


def test_threads_racing_on_a_new_cache_share_one_registry() -> None:
    """The registry is made on the first get_or_compute: callers arriving at once
    on a cache that has none yet still share one (compute runs once)."""
    for _ in range(20):
        cache = SyncEmbeddingCache()
        compute = Counting(delay=0.01)
        call = functools.partial(cache.get_or_compute, [key(1)], compute)
        results = in_threads(*[call] * 8)
        assert compute.calls == 1
        for m in results:
            np.testing.assert_array_equal(m, rows([key(1)]))
        assert cache.flights.in_flight() == 0


# --- threads and tasks share flights --------------------------------------------------------


def test_async_and_thread_get_or_compute_share_one_compute() -> None:
    """A thread computing keys and a task asking for them meanwhile: one compute,
    and the task's loop keeps running while it waits."""
    cache = EmbeddingCache()
    compute, late = Counting(), Counting()
    compute.gate = threading.Event()
    ks = [key(1), key(2)]
    ticks = 0

    async def main() -> np.ndarray:
        nonlocal ticks
        owner = threading.Thread(target=lambda: cache.sync.get_or_compute(ks, compute), daemon=True)
        owner.start()
        assert await asyncio.to_thread(compute.started.wait, TIMEOUT)
        waiter = asyncio.create_task(cache.get_or_compute([key(2), key(1)], late))
        for _ in range(20):  # the loop is not blocked by the waiting task
            ticks += 1
            await asyncio.sleep(0.001)
        compute.gate.set()
        m = await waiter
        owner.join(TIMEOUT)
        return m

    m = run(main())
    np.testing.assert_array_equal(m, rows([key(2), key(1)]))
    assert late.calls == 0, "the task computed keys the thread was computing"
    assert ticks == 20 and compute.calls == 1


def test_a_thread_waits_for_a_task_of_another_loop() -> None:
    cache = SyncEmbeddingCache()
    gate = threading.Event()
    computed: list[list[CacheKey]] = []

    async def slow(keys: list[CacheKey]) -> np.ndarray:
        computed.append(keys)
        await asyncio.to_thread(gate.wait, TIMEOUT)
        return rows(keys)

    async def owner() -> np.ndarray:
        return await flights_of(cache).get_or_compute_async([key(1)], slow)

    def thread_waiter() -> np.ndarray:
        while flights_of(cache).in_flight() == 0:
            time.sleep(0.001)
        threading.Timer(0.02, gate.set).start()
        return cache.get_or_compute([key(1), key(3)], Counting())

    a, b = in_threads(lambda: asyncio.run(owner()), thread_waiter)
    np.testing.assert_array_equal(a, rows([key(1)]))
    np.testing.assert_array_equal(b, rows([key(1), key(3)]))
    assert computed == [[key(1)]]


def test_tasks_of_two_loops_share_one_compute() -> None:
    cache = EmbeddingCache()
    compute = Counting(delay=0.02)
    barrier = threading.Barrier(2)

    def loop_thread() -> np.ndarray:
        async def main() -> np.ndarray:
            await asyncio.to_thread(barrier.wait, TIMEOUT)
            return await cache.get_or_compute([key(i) for i in range(10)], compute)

        return asyncio.run(main())

    results = in_threads(loop_thread, loop_thread)
    for m in results:
        np.testing.assert_array_equal(m, rows([key(i) for i in range(10)]))
    assert set(compute.seen.values()) == {1} and len(compute.seen) == 10


class Boom(Exception):
    pass


def test_a_thread_waiter_gets_the_error_of_a_task_owner() -> None:
    cache = EmbeddingCache()
    gate = threading.Event()

    async def failing(keys: list[CacheKey]) -> np.ndarray:
        await asyncio.to_thread(gate.wait, TIMEOUT)
        raise Boom("model down")

    def thread_waiter() -> Any:
        while cache.sync.flights.in_flight() == 0:
            time.sleep(0.001)
        threading.Timer(0.02, gate.set).start()
        return cache.sync.get_or_compute([key(1)], Counting())

    a, b = in_threads(lambda: run(cache.get_or_compute([key(1)], failing)), thread_waiter)
    assert isinstance(a, Boom) and type(b) is Boom and b is not a and b.__cause__ is a
    assert len(cache) == 0 and cache.sync.flights.in_flight() == 0


class Abort(BaseException):
    pass


def test_a_task_waiter_takes_over_from_a_thread_owner_that_died() -> None:
    cache = EmbeddingCache()
    gate = threading.Event()
    started = threading.Event()

    def dying(keys: list[CacheKey]) -> np.ndarray:
        started.set()
        assert gate.wait(TIMEOUT)
        raise Abort

    async def waiter() -> tuple[np.ndarray, Counting]:
        assert await asyncio.to_thread(started.wait, TIMEOUT)
        compute = Counting()
        task = asyncio.create_task(cache.get_or_compute([key(1)], compute))
        await asyncio.sleep(0.01)
        gate.set()
        return await task, compute

    a, (m, compute) = in_threads(
        lambda: cache.sync.get_or_compute([key(1)], dying), lambda: run(waiter())
    )
    assert isinstance(a, Abort)
    np.testing.assert_array_equal(m, rows([key(1)]))
    assert compute.calls == 1 and key(1) in cache


def test_cancelling_a_task_waiting_on_a_thread_cancels_nothing_else() -> None:
    cache = EmbeddingCache()
    compute = Counting()
    compute.gate = threading.Event()

    async def main() -> np.ndarray:
        owner = asyncio.create_task(asyncio.to_thread(cache.sync.get_or_compute, [key(1)], compute))
        assert await asyncio.to_thread(compute.started.wait, TIMEOUT)
        waiter = asyncio.create_task(cache.get_or_compute([key(1)], Counting()))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        compute.gate.set()
        return await owner

    np.testing.assert_array_equal(run(main()), rows([key(1)]))
    assert compute.calls == 1 and cache.sync.flights.in_flight() == 0


def test_a_waiter_whose_loop_is_gone_is_not_woken() -> None:
    """A task that waited on a thread's flight and whose loop then closed leaves
    nothing behind that breaks the owner's settling."""
    cache = EmbeddingCache()
    compute = Counting()
    compute.gate = threading.Event()

    async def short_waiter() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(cache.get_or_compute([key(1)], Counting()), 0.01)

    def owner() -> np.ndarray:
        return cache.sync.get_or_compute([key(1)], compute)

    def then_waiter() -> None:
        assert compute.started.wait(TIMEOUT)
        asyncio.run(short_waiter())
        compute.gate.set()

    m, _ = in_threads(owner, then_waiter)
    np.testing.assert_array_equal(m, rows([key(1)]))


# --- deadlocks refused ----------------------------------------------------------------------


def test_a_sync_compute_of_a_task_asking_for_its_own_key_raises() -> None:
    """The thread would block on a flight of a task of the loop it runs; that
    flight is the very one the compute is computing: a re-entry."""
    cache = EmbeddingCache()

    def compute(keys: list[CacheKey]) -> np.ndarray:
        cache.sync.get_or_compute([key(1)], Counting())
        return rows(keys)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="from inside the compute that is computing it"):
            await cache.get_or_compute([key(1)], compute)

    run(main())
    assert len(cache) == 0 and cache.sync.flights.in_flight() == 0


def test_a_thread_blocking_on_a_task_of_its_own_loop_raises() -> None:
    cache = EmbeddingCache()
    gate = asyncio.Event

    async def main() -> None:
        release = gate()

        async def slow(keys: list[CacheKey]) -> np.ndarray:
            await release.wait()
            return rows(keys)

        owner = asyncio.create_task(cache.get_or_compute([key(1)], slow))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="event loop running in this thread"):
            cache.sync.get_or_compute([key(1)], Counting())  # blocking call on the loop
        release.set()
        await owner

    run(main())
    assert key(1) in cache


def test_an_async_embed_fn_of_embed_sync_asking_for_its_own_text_raises() -> None:
    """embed_sync runs an async embed_fn with asyncio.run inside its compute; that
    loop asking for the text being embedded would wait for itself: the re-entry
    is seen through the loop's task (it runs as the flight's compute)."""
    cache = SyncEmbeddingCache()
    holder: list[CachedEmbedder] = []

    async def embed_fn(texts: list[str]) -> np.ndarray:
        await holder[0].embed(texts)
        return np.ones((len(texts), DIM))

    embedder = CachedEmbedder(embed_fn, "m", cache=cache)
    holder.append(embedder)
    with pytest.raises(RuntimeError, match="from inside the compute that is computing it"):
        embedder.embed_sync(["a"])
    assert len(cache) == 0 and cache.flights.in_flight() == 0


def test_thread_and_task_computes_waiting_on_each_other_raise() -> None:
    """A thread's compute needs a key a task computes, whose compute needs the
    thread's key: one of them is refused instead of both hanging."""
    cache = EmbeddingCache()
    both = threading.Barrier(2)

    def thread_compute(keys: list[CacheKey]) -> np.ndarray:
        both.wait(TIMEOUT)
        time.sleep(0.01)  # let the task claim key(2) and start its wait
        cache.sync.get_or_compute([key(2)], Counting())
        return rows(keys)

    async def task_compute(keys: list[CacheKey]) -> np.ndarray:
        await asyncio.to_thread(both.wait, TIMEOUT)
        await cache.get_or_compute([key(1)], Counting())
        return rows(keys)

    a, b = in_threads(
        lambda: cache.sync.get_or_compute([key(1)], thread_compute),
        lambda: run(cache.get_or_compute([key(2)], task_compute)),
    )
    errors = [x for x in (a, b) if isinstance(x, RuntimeError)]
    assert errors and "deadlock" in str(errors[0]), (a, b)
    assert cache.sync.flights.in_flight() == 0


# --- what compute returns -------------------------------------------------------------------


def test_compute_may_return_put_batches_of_the_cache() -> None:
    cache = SyncEmbeddingCache()
    cache.put(key(0), vec(0))

    def compute(keys: list[CacheKey]) -> list[Any]:
        parts = []
        for start in range(0, len(keys), 2):
            part = keys[start : start + 2]
            batch = cache.put_batch(part, rows(part), what="mine")
            batch.take()
            parts.append(batch)
        return parts

    ks = [key(i) for i in range(6)]
    np.testing.assert_array_equal(cache.get_or_compute(ks, compute), rows(ks))
    assert len(cache) == 6


def _batches_of(cache: SyncEmbeddingCache, keys: list[CacheKey], dim: int = DIM) -> Any:
    batch = cache.put_batch(keys, rows(keys, dim))
    batch.take()
    return batch


BAD_BATCH_LISTS: list[tuple[str, Callable[[SyncEmbeddingCache, list[CacheKey]], Any], type, str]]
BAD_BATCH_LISTS = [
    (
        "other cache",
        lambda c, ks: [_batches_of(SyncEmbeddingCache(), ks)],
        ValueError,
        "another cache",
    ),
    ("wrong keys", lambda c, ks: [_batches_of(c, ks[::-1])], ValueError, "in order"),
    ("too few", lambda c, ks: [_batches_of(c, ks[:1])], ValueError, "for 1 keys, but 2"),
    ("not taken", lambda c, ks: [c.put_batch(ks, rows(ks))], ValueError, "not taken"),
    ("not a batch", lambda c, ks: [_batches_of(c, ks[:1]), rows(ks[1:])], TypeError, "item 1"),
    (
        "dims",
        lambda c, ks: [_batches_of(c, ks[:1]), _batches_of(c, ks[1:], 5)],
        DimensionMismatchError,
        "dim 5",
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "error", "match"), BAD_BATCH_LISTS, ids=[b[0] for b in BAD_BATCH_LISTS]
)
def test_bad_put_batch_lists_store_nothing(
    name: str, make: Callable[..., Any], error: type, match: str
) -> None:
    cache = SyncEmbeddingCache()
    with pytest.raises(error, match=match) as info:
        cache.get_or_compute([key(1), key(2)], lambda ks: make(cache, ks))
    assert isinstance(info.value, EmbcacheError)
    assert len(cache) == 0 and cache.flights.in_flight() == 0


def test_put_batches_must_match_the_hits_dimension() -> None:
    cache = SyncEmbeddingCache()
    cache.put(key(0), vec(0))
    with pytest.raises(DimensionMismatchError, match="dim 5.*needs dim 4"):
        cache.get_or_compute([key(0), key(1)], lambda ks: [_batches_of(cache, ks, 5)])
    assert len(cache) == 1


def test_rows_of_a_flight_are_private_to_the_cache() -> None:
    """The matrix compute returned may change after the call: neither the cache
    nor the waiters see that (the rows are the batch's own copy)."""
    cache = SyncEmbeddingCache()
    answer = rows([key(1)])
    m = cache.get_or_compute([key(1)], lambda ks: answer)
    answer[:] = np.nan
    np.testing.assert_array_equal(m, rows([key(1)]))
    np.testing.assert_array_equal(cache.get(key(1)), vec(1))


@pytest.mark.parametrize("use_async", [False, True])
def test_compute_errors_name_compute_row_and_element(use_async: bool) -> None:
    cache = EmbeddingCache()

    def compute(keys: list[CacheKey]) -> np.ndarray:
        out = rows(keys)
        out[1, 3] = np.inf
        return out

    with pytest.raises(InvalidVectorError, match=OUT + r"\[1, 3\] is inf") as info:
        if use_async:
            run(cache.get_or_compute([key(1), key(2)], compute))
        else:
            cache.sync.get_or_compute([key(1), key(2)], compute)
    assert isinstance(info.value, EmbcacheError) and len(cache) == 0


def test_a_task_blocking_a_sync_compute_lower_in_its_stack_raises() -> None:
    """A task of a loop that a sync compute runs, outside that compute's context
    (an empty one): it is not seen as the compute, yet waiting for the flight
    would wait for the thread it runs on."""
    cache = SyncEmbeddingCache()

    def compute(keys: list[CacheKey]) -> np.ndarray:
        async def inner() -> Any:
            return await cache.flights.get_or_compute_async([key(1)], Counting())

        contextvars.Context().run(asyncio.run, inner())
        return rows(keys)  # pragma: no cover - never reached

    with pytest.raises(RuntimeError, match="lower in this thread's stack"):
        cache.get_or_compute([key(1)], compute)
    assert len(cache) == 0 and cache.flights.in_flight() == 0
