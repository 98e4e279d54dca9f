"""Single-flight hardening.

* every waiter raises its own copy of the owner's exception (chained from it),
  and the owner's exception is never mutated by the waiters' raises;
* a StopIteration out of compute reaches every caller as a RuntimeError naming
  compute (chained from it), sync and async, and nothing is stored;
* ``timeout=``: a waiter stops waiting (FlightTimeoutError, a TimeoutError),
  the flight goes on; an async owner's awaited compute is cancelled.

Every wait has a timeout, so a bug fails a test instead of hanging the suite."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import traceback
from types import TracebackType
from typing import Any, Callable

import numpy as np
import pytest
from conftest import TIMEOUT, in_threads, key, run, vec

from embcache import (
    CachedEmbedder,
    CacheKey,
    EmbcacheError,
    EmbeddingCache,
    SyncEmbeddingCache,
)
from embcache.errors import ArgumentTypeError, ArgumentValueError
from embcache.flight.registry import Flights, FlightTimeoutError

DIM = 4
N_WAITERS = 5


def rows(keys: list[CacheKey], dim: int = DIM) -> np.ndarray:
    return np.stack([vec(int(k.content_hash.split("-", 1)[1]), dim) for k in keys])


def tb_frames(tb: TracebackType | None) -> list[Any]:
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def flights(cache: EmbeddingCache | SyncEmbeddingCache) -> Flights:
    sync = cache.sync if isinstance(cache, EmbeddingCache) else cache
    f = sync.flights
    assert isinstance(f, Flights)
    return f


def n_waiting(f: Flights) -> int:
    with f._lock:
        return len(f._waiting)


def wait_until(cond: Callable[[], bool]) -> None:
    end = time.monotonic() + TIMEOUT
    while not cond():
        assert time.monotonic() < end, "condition never met"
        time.sleep(0.001)


async def await_until(cond: Callable[[], bool]) -> None:
    end = time.monotonic() + TIMEOUT
    while not cond():
        assert time.monotonic() < end, "condition never met"
        await asyncio.sleep(0.001)


class Boom(ValueError):
    pass


class TwoArgs(ValueError):
    """Its constructor rejects its own args: copy.copy cannot rebuild it."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{code}: {why}")
        self.code = code


# --- 1. each waiter gets its own exception ----------------------------------------------


@pytest.mark.parametrize("make", [lambda: Boom("model down"), lambda: TwoArgs(7, "down")])
def test_thread_waiters_each_get_their_own_exception(make: Callable[[], Exception]) -> None:
    cache = SyncEmbeddingCache()
    f = flights(cache)
    gate = threading.Event()
    owner_seen: dict[str, Any] = {}

    def failing(keys: list[CacheKey]) -> np.ndarray:
        assert gate.wait(TIMEOUT)
        raise make()

    def owner() -> Any:
        try:
            cache.get_or_compute([key(1), key(2)], failing)
        except ValueError as exc:
            owner_seen["exc"] = exc
            owner_seen["tb"] = exc.__traceback__
            owner_seen["frames"] = tb_frames(exc.__traceback__)
            owner_seen["context"] = exc.__context__
            owner_seen["text"] = "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)
            )
            # let the waiters raise before we look again
            wait_until(lambda: done.count(True) == N_WAITERS)
            return exc
        raise AssertionError("no error")

    done: list[bool] = []

    def waiter() -> Any:
        wait_until(lambda: f.in_flight() == 2)
        try:
            cache.get_or_compute([key(2), key(1)], lambda keys: rows(keys))
        except ValueError as exc:  # the waiter can catch the owner's type
            return exc
        finally:
            done.append(True)
        raise AssertionError("no error")

    def opener() -> None:
        wait_until(lambda: n_waiting(f) == N_WAITERS)
        gate.set()

    results = in_threads(owner, *([waiter] * N_WAITERS), opener)
    mine, waiters = results[0], results[1 : 1 + N_WAITERS]
    original = owner_seen["exc"]
    assert mine is original
    # the owner's exception is untouched by the waiters' raises
    assert original.__traceback__ is owner_seen["tb"]
    assert tb_frames(original.__traceback__) == owner_seen["frames"]
    assert original.__context__ is owner_seen["context"]
    assert (
        "".join(traceback.format_exception(type(original), original, original.__traceback__))
        == owner_seen["text"]
    )
    # every waiter has its own object, of the owner's type, chained from it
    assert len({id(w) for w in waiters} | {id(original)}) == N_WAITERS + 1
    for w in waiters:
        assert type(w) is type(original) and w.args == original.args
        assert w.__cause__ is original
        assert not (set(map(id, tb_frames(w.__traceback__))) & set(map(id, owner_seen["frames"])))
    if isinstance(original, TwoArgs):
        assert all(w.code == 7 for w in waiters)
    # each waiter's traceback holds its own frames only (no growth across waiters)
    assert len({len(tb_frames(w.__traceback__)) for w in waiters}) == 1
    assert len(cache) == 0 and f.in_flight() == 0


def test_task_waiters_each_get_their_own_exception() -> None:
    cache = EmbeddingCache()
    f = flights(cache)

    async def main() -> tuple[Exception, list[Any], TracebackType | None, list[Any]]:
        gate = asyncio.Event()

        async def failing(keys: list[CacheKey]) -> np.ndarray:
            await gate.wait()
            raise Boom("model down")

        owner = asyncio.ensure_future(cache.get_or_compute([key(1)], failing))
        await await_until(lambda: f.in_flight() == 1)
        waiters = [
            asyncio.ensure_future(cache.get_or_compute([key(1)], lambda k: rows(k)))
            for _ in range(N_WAITERS)
        ]
        await await_until(lambda: n_waiting(f) == N_WAITERS)
        gate.set()
        try:
            await owner
        except Boom as exc:
            original = exc
            tb, frames = exc.__traceback__, tb_frames(exc.__traceback__)
        got = await asyncio.gather(*waiters, return_exceptions=True)
        return original, got, tb, frames

    original, got, tb, frames = run(main())
    assert original.__traceback__ is tb and tb_frames(original.__traceback__) == frames
    assert len({id(w) for w in got} | {id(original)}) == N_WAITERS + 1
    for w in got:
        assert type(w) is Boom and w.__cause__ is original and w.args == ("model down",)
    assert len(cache) == 0 and f.in_flight() == 0


# --- 2. StopIteration out of compute -----------------------------------------------------


def stopping(keys: list[CacheKey]) -> np.ndarray:
    raise StopIteration


def test_stop_iteration_sync_owner_and_waiter() -> None:
    cache = SyncEmbeddingCache()
    f = flights(cache)
    gate = threading.Event()

    def compute(keys: list[CacheKey]) -> np.ndarray:
        assert gate.wait(TIMEOUT)
        raise StopIteration("nothing left")

    def waiter() -> Any:
        wait_until(lambda: f.in_flight() == 1)
        threading.Timer(0.05, gate.set).start()
        return cache.get_or_compute([key(1)], lambda k: rows(k))

    a, b = in_threads(lambda: cache.get_or_compute([key(1)], compute), waiter)
    assert type(a) is RuntimeError and str(a) == "compute raised StopIteration"
    assert type(a.__cause__) is StopIteration
    assert type(b) is RuntimeError and b is not a and b.__cause__ is a
    assert len(cache) == 0 and f.in_flight() == 0
    with pytest.raises(RuntimeError, match="^compute raised StopIteration$") as info:
        cache.get_or_compute([key(2)], stopping)
    assert isinstance(info.value.__cause__, StopIteration)
    assert len(cache) == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_stop_iteration_async_owner_and_waiter(kind: str) -> None:
    cache = EmbeddingCache()
    f = flights(cache)

    async def main() -> list[Any]:
        gate = asyncio.Event()

        async def async_compute(keys: list[CacheKey]) -> np.ndarray:
            await gate.wait()
            raise StopIteration

        def sync_compute(keys: list[CacheKey]) -> np.ndarray:
            raise StopIteration

        if kind == "sync":
            owner = asyncio.ensure_future(cache.get_or_compute([key(1)], sync_compute))
            return list(await asyncio.gather(owner, return_exceptions=True))
        owner = asyncio.ensure_future(cache.get_or_compute([key(1)], async_compute))
        await await_until(lambda: f.in_flight() == 1)
        waiter = asyncio.ensure_future(cache.get_or_compute([key(1)], lambda k: rows(k)))
        await await_until(lambda: n_waiting(f) == 1)
        gate.set()
        return list(await asyncio.gather(owner, waiter, return_exceptions=True))

    got = run(main())
    a = got[0]
    assert type(a) is RuntimeError
    if kind == "sync":
        assert str(a) == "compute raised StopIteration"
        assert type(a.__cause__) is StopIteration
    for b in got[1:]:
        assert type(b) is RuntimeError and b is not a and b.__cause__ is a
    assert len(cache) == 0 and f.in_flight() == 0


def test_stop_iteration_of_embed_fn_in_a_worker_thread() -> None:
    def embed_fn(texts: list[str]) -> np.ndarray:
        raise StopIteration

    emb = CachedEmbedder(embed_fn, "m")
    with pytest.raises(RuntimeError, match="^embed_fn raised StopIteration$") as info:
        run(emb.embed(["a", "b"]))
    assert isinstance(info.value.__cause__, StopIteration)
    with pytest.raises(RuntimeError, match="^embed_fn raised StopIteration$"):
        emb.embed_sync(["a"])
    assert len(emb.cache) == 0


# --- 3. timeout= -------------------------------------------------------------------------


BAD_TYPES = [True, False, "1", b"1", [1], complex(1, 0)]
BAD_VALUES = [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf]  # None says "no limit"


@pytest.mark.parametrize("bad", BAD_TYPES + BAD_VALUES)
def test_bad_timeout_is_refused_before_anything_happens(bad: Any) -> None:
    err = ArgumentTypeError if any(bad is b for b in BAD_TYPES) else ArgumentValueError
    cache = SyncEmbeddingCache()
    cache.put(key(1), vec(1))
    before = cache.get_cache_info()
    calls: list[Any] = []

    def record(keys: list[CacheKey]) -> Any:
        calls.append(keys)

    with pytest.raises(err, match="timeout"):
        flights(cache).get_or_compute([key(1), key(2)], record, timeout=bad)
    with pytest.raises(err, match="timeout"):
        run(flights(cache).get_or_compute_async([key(1)], record, timeout=bad))
    facade = EmbeddingCache()
    with pytest.raises(err, match="timeout"):
        run(facade.get_or_compute([key(1)], record, timeout=bad))
    with pytest.raises(err, match="timeout"):
        CachedEmbedder(lambda t: np.zeros((len(t), DIM)), "m", timeout=bad)
    assert calls == [] and cache.get_cache_info() == before


def test_good_timeouts_are_accepted() -> None:
    cache = SyncEmbeddingCache()
    good: list[Any] = [None, 1, 0.5, np.float64(2.0), np.int64(3), 1e9]
    for t in good:
        m = flights(cache).get_or_compute([key(1)], lambda k: rows(k), timeout=t)
        np.testing.assert_array_equal(m, rows([key(1)]))
    assert CachedEmbedder(lambda t: np.zeros((len(t), DIM)), "m", timeout=2).timeout == 2.0
    assert CachedEmbedder(lambda t: np.zeros((len(t), DIM)), "m").timeout is None


def test_thread_waiter_times_out_and_the_flight_goes_on() -> None:
    cache = SyncEmbeddingCache()
    f = flights(cache)
    release = threading.Event()
    try:

        def hung(keys: list[CacheKey]) -> np.ndarray:
            assert release.wait(TIMEOUT)
            return rows(keys)

        owner = threading.Thread(
            target=lambda: cache.get_or_compute([key(1), key(2)], hung), daemon=True
        )
        owner.start()
        wait_until(lambda: f.in_flight() == 2)
        t0 = time.monotonic()
        with pytest.raises(FlightTimeoutError) as info:
            f.get_or_compute([key(3), key(1)], lambda k: rows(k), timeout=0.1)
        assert time.monotonic() - t0 >= 0.09
        assert isinstance(info.value, TimeoutError) and isinstance(info.value, EmbcacheError)
        # the waiter computed its own key (3) and left the flight alone
        assert key(3) in cache and f.in_flight() == 2 and n_waiting(f) == 0
        assert owner.is_alive()
    finally:
        release.set()
    owner.join(TIMEOUT)
    assert not owner.is_alive()
    assert f.in_flight() == 0 and key(1) in cache and key(2) in cache
    m = f.get_or_compute([key(1)], lambda k: pytest.fail("computed"), timeout=0.1)
    np.testing.assert_array_equal(m, rows([key(1)]))


def test_sync_owner_compute_is_not_interrupted() -> None:
    cache = SyncEmbeddingCache()

    def slow(keys: list[CacheKey]) -> np.ndarray:
        time.sleep(0.15)
        return rows(keys)

    m = flights(cache).get_or_compute([key(1)], slow, timeout=0.05)
    np.testing.assert_array_equal(m, rows([key(1)]))
    assert key(1) in cache

    facade = EmbeddingCache()

    async def main() -> np.ndarray:
        return await facade.get_or_compute([key(2)], slow, timeout=0.05)

    np.testing.assert_array_equal(run(main()), rows([key(2)]))
    assert key(2) in facade


def test_task_waiter_times_out_on_a_thread_owner() -> None:
    cache = EmbeddingCache()
    f = flights(cache)
    release = threading.Event()
    try:

        def hung(keys: list[CacheKey]) -> np.ndarray:
            assert release.wait(TIMEOUT)
            return rows(keys)

        owner = threading.Thread(
            target=lambda: cache.sync.get_or_compute([key(1)], hung), daemon=True
        )
        owner.start()
        wait_until(lambda: f.in_flight() == 1)

        async def main() -> None:
            other = asyncio.ensure_future(asyncio.sleep(0.01))  # the loop keeps running
            with pytest.raises(FlightTimeoutError):
                await cache.get_or_compute([key(1)], lambda k: rows(k), timeout=0.1)
            await other

        run(main())
        assert f.in_flight() == 1 and n_waiting(f) == 0 and owner.is_alive()
    finally:
        release.set()
    owner.join(TIMEOUT)
    assert f.in_flight() == 0 and key(1) in cache


def test_task_waiter_times_out_on_a_task_owner() -> None:
    cache = EmbeddingCache()
    f = flights(cache)

    async def main() -> None:
        release = asyncio.Event()

        async def hung(keys: list[CacheKey]) -> np.ndarray:
            await release.wait()
            return rows(keys)

        owner = asyncio.ensure_future(cache.get_or_compute([key(1)], hung))
        await await_until(lambda: f.in_flight() == 1)
        try:
            with pytest.raises(FlightTimeoutError):
                await cache.get_or_compute([key(1)], lambda k: rows(k), timeout=0.05)
            assert f.in_flight() == 1 and n_waiting(f) == 0 and not owner.done()
        finally:
            release.set()
        np.testing.assert_array_equal(await owner, rows([key(1)]))

    run(main())
    assert f.in_flight() == 0 and key(1) in cache


def test_async_owner_compute_is_cancelled_at_its_timeout_and_a_waiter_takes_over() -> None:
    cache = EmbeddingCache()
    f = flights(cache)
    cancelled: list[bool] = []

    async def main() -> np.ndarray:
        release = asyncio.Event()

        async def hung(keys: list[CacheKey]) -> np.ndarray:
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return rows(keys)

        try:
            owner = asyncio.ensure_future(cache.get_or_compute([key(1)], hung, timeout=0.1))
            await await_until(lambda: f.in_flight() == 1)
            waiter = asyncio.ensure_future(cache.get_or_compute([key(1)], lambda k: rows(k)))
            with pytest.raises(FlightTimeoutError, match="compute did not finish"):
                await owner
            return await waiter  # it claimed the abandoned key and computed it
        finally:
            release.set()

    np.testing.assert_array_equal(run(main()), rows([key(1)]))
    assert cancelled == [True] and f.in_flight() == 0 and key(1) in cache


def test_async_owner_alone_times_out_and_stores_nothing() -> None:
    cache = EmbeddingCache()

    async def main() -> None:
        release = asyncio.Event()

        async def hung(keys: list[CacheKey]) -> np.ndarray:
            await release.wait()
            return rows(keys)

        try:
            with pytest.raises(FlightTimeoutError):
                await cache.get_or_compute([key(1), key(2)], hung, timeout=0.05)
        finally:
            release.set()

    run(main())
    assert len(cache) == 0 and flights(cache).in_flight() == 0


def test_a_timeout_error_of_compute_itself_is_not_ours() -> None:
    cache = EmbeddingCache()

    async def own(keys: list[CacheKey]) -> np.ndarray:
        raise TimeoutError("the model's HTTP timeout")

    with pytest.raises(TimeoutError, match="HTTP") as info:
        run(cache.get_or_compute([key(1)], own, timeout=5))
    assert not isinstance(info.value, FlightTimeoutError)
    assert flights(cache).in_flight() == 0


def test_embedder_timeout_applies_to_embed_and_embed_sync() -> None:
    cache = SyncEmbeddingCache()
    f = flights(cache)
    release = threading.Event()
    entered = threading.Event()

    def slow_fn(texts: list[str]) -> np.ndarray:
        entered.set()
        assert release.wait(TIMEOUT)
        return np.ones((len(texts), DIM))

    busy = CachedEmbedder(slow_fn, "m", cache=cache)
    quick = CachedEmbedder(lambda t: np.zeros((len(t), DIM)), "m", cache=cache, timeout=0.05)
    assert quick.timeout == 0.05
    try:
        owner = threading.Thread(target=lambda: busy.embed_sync(["a"]), daemon=True)
        owner.start()
        assert entered.wait(TIMEOUT)
        with pytest.raises(FlightTimeoutError):
            quick.embed_sync(["a", "b"])
        with pytest.raises(FlightTimeoutError):
            run(quick.embed(["a"]))
        assert f.in_flight() == 1
    finally:
        release.set()
    owner.join(TIMEOUT)
    np.testing.assert_array_equal(quick.embed_sync(["a"]), np.ones((1, DIM)))
    assert f.in_flight() == 0


def test_embedder_async_embed_fn_is_cancelled_at_the_timeout() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def hung(texts: list[str]) -> np.ndarray:
            await release.wait()
            return np.ones((len(texts), DIM))

        emb = CachedEmbedder(hung, "m", timeout=0.05)
        try:
            with pytest.raises(FlightTimeoutError, match="did not finish within the timeout"):
                await emb.embed(["a", "b"])
        finally:
            release.set()
        assert len(emb.cache) == 0 and flights(emb.cache).in_flight() == 0

    run(main())
