"""The single-flight registry's one-key path (``Flights.get_or_compute_one`` and
``get_or_compute_one_async``; ``get_or_compute`` of one key and CachedEmbedder's
one-text embed / embed_sync go through it): the same guarantees as the batch
path, without its planning. One key missed by many threads or tasks at once is
computed once; an error reaches every waiter (a copy each); a cancelled or
dead owner's key is claimed again; epochs make a stale lookup read again.
Every wait is bounded, so a bug fails a test instead of hanging the suite."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from typing import Any

import numpy as np
import pytest
from conftest import TIMEOUT, in_threads, key, run, vec

from embcache import (
    ArgumentTypeError,
    CachedEmbedder,
    CacheKey,
    DimensionMismatchError,
    EmbeddingCache,
    FlightTimeoutError,
    InvalidVectorError,
    KeyTypeError,
    SyncEmbeddingCache,
    VectorTypeError,
)
from embcache.flight.registry import flights_of

DIM = 4


class Gated:
    """A thread-safe sync compute of one key's row that counts its calls and
    (with a gate) signals `started` and waits for the gate before answering."""

    def __init__(self, gated: bool = True, error: BaseException | None = None) -> None:
        self.calls: list[list[CacheKey]] = []
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.error = error

    def __call__(self, keys: list[CacheKey]) -> np.ndarray:
        with self.lock:
            self.calls.append(list(keys))
        self.started.set()
        assert self.gate.wait(TIMEOUT)
        if self.error is not None:
            raise self.error
        return np.stack([vec(7) for _ in keys])


def test_one_key_missed_by_many_threads_is_computed_once() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    compute = Gated()
    k = key(1)

    def caller() -> np.ndarray:
        return flights.get_or_compute_one(k, compute, timeout=TIMEOUT)

    def opener() -> None:
        assert compute.started.wait(TIMEOUT)
        # every other caller is claiming or waiting by now, or will find the row
        compute.gate.set()

    results = in_threads(*([caller] * 8), opener)
    assert compute.calls == [[k]]
    for got in results[:8]:
        assert isinstance(got, np.ndarray), got
        assert got.shape == (1, DIM) and got.dtype == np.float32
        np.testing.assert_array_equal(got[0], vec(7))
    # each caller has its own writable array
    assert len({id(r) for r in results[:8]}) == 8
    assert all(r.flags.writeable for r in results[:8])
    assert flights.in_flight() == 0
    np.testing.assert_array_equal(cache.get(k), vec(7))


def test_one_key_missed_by_many_tasks_is_computed_once() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    calls: list[list[CacheKey]] = []
    k = key(2)

    async def compute(keys: list[CacheKey]) -> np.ndarray:
        calls.append(list(keys))
        await asyncio.sleep(0.01)
        return np.stack([vec(2) for _ in keys])

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(
            *(flights.get_or_compute_one_async(k, compute) for _ in range(10))
        )

    results = run(main())
    assert calls == [[k]]
    for got in results:
        np.testing.assert_array_equal(got, vec(2)[None])
    assert flights.in_flight() == 0


def test_a_thread_and_a_task_share_one_compute_of_one_key() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    compute = Gated()
    k = key(3)
    out: dict[str, Any] = {}

    def in_thread() -> None:
        out["thread"] = flights.get_or_compute_one(k, compute, timeout=TIMEOUT)

    thread = threading.Thread(target=in_thread, daemon=True)
    thread.start()
    assert compute.started.wait(TIMEOUT)

    async def task() -> np.ndarray:
        waiter = asyncio.ensure_future(
            flights.get_or_compute_one_async(k, compute, timeout=TIMEOUT)
        )
        await asyncio.sleep(0.02)
        assert not waiter.done()  # it waits for the thread's flight
        compute.gate.set()
        return await waiter

    out["task"] = run(task())
    thread.join(TIMEOUT)
    assert compute.calls == [[k]]
    np.testing.assert_array_equal(out["thread"], out["task"])


def owner_then_waiters(owner: Any, waiter: Any, n_waiters: int, started: Any, gate: Any) -> list:
    """Run `owner` in a thread until its compute has started, then `n_waiters`
    threads of `waiter`; open `gate` once they are waiting (an error is not
    cached, so a caller arriving after the owner failed would compute again).
    The results (or exceptions), the owner's first."""
    out: list[Any] = [None] * (1 + n_waiters)

    def target(i: int, fn: Any) -> None:
        try:
            out[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out[i] = exc

    threads = [threading.Thread(target=target, args=(0, owner), daemon=True)]
    threads[0].start()
    assert started.wait(TIMEOUT)
    threads += [
        threading.Thread(target=target, args=(i, waiter), daemon=True)
        for i in range(1, 1 + n_waiters)
    ]
    for t in threads[1:]:
        t.start()
    time.sleep(0.1)  # the waiters block on the owner's flight
    gate.set()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "hung"
    return out


def test_an_owner_error_reaches_every_waiter_as_its_own_copy() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    compute = Gated(error=ValueError("model down"))
    k = key(4)

    def caller() -> Any:
        return flights.get_or_compute_one(k, compute, timeout=TIMEOUT)

    results = owner_then_waiters(caller, caller, 5, compute.started, compute.gate)
    assert len(compute.calls) == 1
    assert all(isinstance(r, ValueError) and str(r) == "model down" for r in results)
    owner, waiters = results[0], results[1:]
    assert owner is compute.error
    # every waiter raises its own copy, chained from the owner's exception
    assert len({id(r) for r in waiters}) == len(waiters)
    assert all(r is not owner and r.__cause__ is owner for r in waiters)
    assert k not in cache
    assert flights.in_flight() == 0
    # nothing was stored: the next call computes again
    compute.error = None
    np.testing.assert_array_equal(caller(), vec(7)[None])
    assert len(compute.calls) == 2


def test_cancelling_the_owner_task_hands_the_key_to_a_waiter() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    calls: list[str] = []
    k = key(5)
    started = asyncio.Event

    async def main() -> np.ndarray:
        first_started = started()

        async def slow(keys: list[CacheKey]) -> np.ndarray:
            calls.append("slow")
            first_started.set()
            await asyncio.sleep(TIMEOUT)
            raise AssertionError("never finishes")

        async def quick(keys: list[CacheKey]) -> np.ndarray:
            calls.append("quick")
            return np.stack([vec(5) for _ in keys])

        owner = asyncio.ensure_future(flights.get_or_compute_one_async(k, slow))
        await first_started.wait()
        waiter = asyncio.ensure_future(flights.get_or_compute_one_async(k, quick))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        owner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await owner
        return await waiter

    got = run(main())
    assert calls == ["slow", "quick"]  # the waiter claimed the key and computed it
    np.testing.assert_array_equal(got, vec(5)[None])
    assert flights.in_flight() == 0


def test_cancelling_a_waiter_leaves_the_owner_alone() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    k = key(6)

    async def main() -> np.ndarray:
        gate = asyncio.Event()

        async def compute(keys: list[CacheKey]) -> np.ndarray:
            await gate.wait()
            return np.stack([vec(6) for _ in keys])

        owner = asyncio.ensure_future(flights.get_or_compute_one_async(k, compute))
        await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(flights.get_or_compute_one_async(k, compute))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.set()
        return await owner

    np.testing.assert_array_equal(run(main()), vec(6)[None])
    assert flights.in_flight() == 0


def test_a_waiter_times_out_and_the_owner_goes_on() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    compute = Gated()
    k = key(7)
    out: dict[str, Any] = {}

    def owner() -> None:
        out["owner"] = flights.get_or_compute_one(k, compute)

    thread = threading.Thread(target=owner, daemon=True)
    thread.start()
    assert compute.started.wait(TIMEOUT)
    with pytest.raises(FlightTimeoutError):
        flights.get_or_compute_one(k, compute, timeout=0.05)
    compute.gate.set()
    thread.join(TIMEOUT)
    np.testing.assert_array_equal(out["owner"], vec(7)[None])
    assert len(compute.calls) == 1


def test_a_compute_asking_for_its_own_key_is_refused() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    k = key(8)

    def compute(keys: list[CacheKey]) -> np.ndarray:
        return flights.get_or_compute_one(k, compute)

    with pytest.raises(RuntimeError, match="its own"):
        flights.get_or_compute_one(k, compute)
    assert flights.in_flight() == 0
    assert k not in cache


def test_a_stale_lookup_reads_the_key_again_instead_of_computing() -> None:
    """A flight settled between the caller's lookup and its claim: the epoch
    moved, so the caller reads the key again (no second compute)."""
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    k = key(9)
    epoch = flights.epoch
    assert cache.get(k) is None  # our lookup: a miss
    flights.get_or_compute_one(k, lambda keys: np.stack([vec(9)]))  # someone else's
    assert flights.epoch == epoch + 1

    def never(keys: list[CacheKey]) -> np.ndarray:
        raise AssertionError("computed a key stored meanwhile")

    got = flights.get_or_compute_one(k, never, missed_at=epoch)
    np.testing.assert_array_equal(got, vec(9)[None])


def test_missed_at_is_not_looked_up_again() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    k = key(10)
    epoch = flights.epoch
    assert cache.get(k) is None
    flights.get_or_compute_one(k, lambda keys: np.stack([vec(10)]), missed_at=epoch)
    info = cache.get_cache_info()
    assert (info.hits, info.misses) == (0, 1)  # the caller's own lookup, counted once


def test_get_or_compute_of_one_key_takes_the_one_key_path() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    seen: list[list[CacheKey]] = []

    def compute(keys: list[CacheKey]) -> np.ndarray:
        seen.append(list(keys))
        return np.stack([vec(11) for _ in keys])

    got = cache.get_or_compute([key(11)], compute)
    again = cache.get_or_compute([key(11)], compute)
    assert seen == [[key(11)]]
    np.testing.assert_array_equal(got, again)
    info = cache.get_cache_info()
    assert (info.hits, info.misses) == (1, 1)  # each lookup counted once
    got[0, 0] = -1.0  # the caller's own array: the cache is untouched
    np.testing.assert_array_equal(cache.get(key(11)), vec(11))


@pytest.mark.parametrize("use_async", [False, True])
def test_bad_answers_store_nothing_and_leave_nothing_in_flight(use_async: bool) -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)
    k = key(12)
    answers: list[Any] = [
        (np.full((1, DIM), np.nan), InvalidVectorError),
        (np.ones((2, DIM)), InvalidVectorError),
        (np.ones((1, DIM + 1)), DimensionMismatchError),
        ([[1.0, 2.0]], DimensionMismatchError),
        ("four", VectorTypeError),
        ([], InvalidVectorError),
    ]
    for answer, error in answers:

        def compute(keys: list[CacheKey], answer: Any = answer) -> Any:
            return answer

        with pytest.raises(error):
            if use_async:
                run(flights.get_or_compute_one_async(k, compute))
            else:
                flights.get_or_compute_one(k, compute)
        assert k not in cache and len(cache) == 0
        assert flights.in_flight() == 0


def test_bad_arguments_are_refused_before_anything_happens() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)

    def ok(keys: list[CacheKey]) -> np.ndarray:
        return np.ones((1, DIM))

    async def coro_fn(keys: list[CacheKey]) -> np.ndarray:
        return np.ones((1, DIM))

    with pytest.raises(KeyTypeError):
        flights.get_or_compute_one("hash-1", ok)  # type: ignore[arg-type]
    with pytest.raises(KeyTypeError):
        run(flights.get_or_compute_one_async([key(1)], ok))  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        flights.get_or_compute_one(key(1), 42)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="async function"):
        flights.get_or_compute_one(key(1), coro_fn)
    for timeout in (0, -1.0, float("nan"), "1", True):
        with pytest.raises((TypeError, ValueError)):
            flights.get_or_compute_one(key(1), ok, timeout=timeout)  # type: ignore[arg-type]
    assert len(cache) == 0 and cache.get_cache_info().misses == 0


def test_an_awaitable_answer_of_the_sync_path_is_refused_and_closed() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)

    async def later() -> np.ndarray:
        return np.ones((1, DIM))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would fail here
        with pytest.raises(ArgumentTypeError, match="awaitable"):
            flights.get_or_compute_one(key(13), lambda keys: later())
        gc.collect()
    assert flights.in_flight() == 0 and len(cache) == 0


def test_stop_iteration_out_of_compute_is_a_runtime_error() -> None:
    cache = SyncEmbeddingCache(100, dim=DIM)
    flights = flights_of(cache)

    def compute(keys: list[CacheKey]) -> np.ndarray:
        raise StopIteration

    with pytest.raises(RuntimeError, match="StopIteration"):
        flights.get_or_compute_one(key(14), compute)
    assert flights.in_flight() == 0


# -- through CachedEmbedder ------------------------------------------------------------


def test_embed_sync_of_one_text_in_many_threads_calls_the_model_once() -> None:
    model_calls: list[list[str]] = []
    lock = threading.Lock()
    started, gate = threading.Event(), threading.Event()

    def model(texts: list[str]) -> np.ndarray:
        with lock:
            model_calls.append(list(texts))
        started.set()
        assert gate.wait(TIMEOUT)
        return np.full((len(texts), DIM), 0.5, dtype=np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=TIMEOUT)

    def caller() -> np.ndarray:
        return embedder.embed_sync(["what is a frozenset?"])

    def opener() -> None:
        assert started.wait(TIMEOUT)
        gate.set()

    results = in_threads(*([caller] * 6), opener)[:6]
    assert model_calls == [["what is a frozenset?"]]
    for got in results:
        np.testing.assert_array_equal(got, np.full((1, DIM), 0.5, dtype=np.float32))
    stats = embedder.stats
    assert stats.texts_requested == 6
    assert stats.texts_embedded == 1 and stats.model_calls == 1
    assert stats.texts_from_cache == 5


def test_embed_of_one_text_in_many_tasks_calls_the_model_once() -> None:
    model_calls: list[list[str]] = []

    async def model(texts: list[str]) -> np.ndarray:
        model_calls.append(list(texts))
        await asyncio.sleep(0.01)
        return np.full((len(texts), DIM), 0.25, dtype=np.float32)

    embedder = CachedEmbedder(model, "m", cache=EmbeddingCache(100))

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(embedder.embed(["q"]) for _ in range(8)))

    results = run(main())
    assert model_calls == [["q"]]
    assert all(r.shape == (1, DIM) for r in results)
    assert embedder.stats.texts_embedded == 1 and embedder.stats.texts_requested == 8


@pytest.mark.parametrize("use_async", [False, True])
def test_a_hit_right_after_a_miss_returns_the_same_vector(use_async: bool) -> None:
    rng = np.random.default_rng(13)

    def model(texts: list[str]) -> np.ndarray:
        return rng.standard_normal((len(texts), DIM)).astype(np.float32)

    embedder = CachedEmbedder(model, "m", cache=EmbeddingCache(100))
    for i in range(20):
        text = f"query {i}"
        if use_async:
            miss, hit = run(embedder.embed([text])), run(embedder.embed([text]))
        else:
            miss, hit = embedder.embed_sync([text]), embedder.embed_sync([text])
        np.testing.assert_array_equal(miss, hit)
        assert miss.flags.writeable and hit.flags.writeable
        miss[0, 0] = 1e6  # the miss's array is the caller's: the cache holds its own
        assert embedder.embed_sync([text])[0, 0] == hit[0, 0]
    stats = embedder.stats
    assert stats.texts_embedded == 20 and stats.texts_from_cache == 40


def test_a_model_error_of_one_text_reaches_every_waiting_thread() -> None:
    started, gate = threading.Event(), threading.Event()
    error = ConnectionError("the embedding service is down")
    model_calls = []

    def model(texts: list[str]) -> np.ndarray:
        model_calls.append(texts)
        started.set()
        assert gate.wait(TIMEOUT)
        raise error

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=TIMEOUT)

    def caller() -> np.ndarray:
        return embedder.embed_sync(["q"])

    results = owner_then_waiters(caller, caller, 3, started, gate)
    assert len(model_calls) == 1
    assert all(isinstance(r, ConnectionError) for r in results)
    assert results[0] is error and all(r.__cause__ is error for r in results[1:])
    assert embedder.stats.texts_requested == 0  # a call that raised is not counted
    assert len(embedder.cache) == 0  # type: ignore[arg-type]


def test_one_text_of_a_wrong_answer_names_the_model_call() -> None:
    embedder = CachedEmbedder(
        lambda texts: np.full((len(texts), DIM), np.inf), "m", cache=SyncEmbeddingCache(100)
    )
    with pytest.raises(InvalidVectorError, match=r"embed_fn\(misses\[0:1\]\)\[0, 0\] is inf"):
        embedder.embed_sync(["q"])
    assert len(embedder.cache) == 0  # type: ignore[arg-type]
