"""CachedEmbedder's ``timeout`` holds for every caller and every model.

Four callers (``embed``, ``embed_one``: awaited; ``embed_sync``,
``embed_one_sync``: blocking) and two kinds of model (``async def``; plain
function). The model would hang for HANG seconds; every call must raise
FlightTimeoutError within about LIMIT seconds, store nothing and leave no key in
flight. An async model is really cancelled (its ``CancelledError`` handler runs
before the call returns) and no task or thread of ours is left behind; a sync
model cannot be interrupted: it finishes in the embedder's model thread (one
persistent worker by default, ``model_threads``), and its answer is dropped.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TIMEOUT, run_python

from embcache import CachedEmbedder, EmbeddingCache, SyncEmbeddingCache
from embcache.errors import FlightTimeoutError
from embcache.flight.registry import Flights

DIM = 4
LIMIT = 0.3
"""The embedder's timeout in these tests."""
HANG = 20.0
"""How long a hung model would take (far longer than LIMIT, than SLACK, and than TIMEOUT)."""
SLACK = 3.0
"""How late past LIMIT a timed-out call may return on a loaded machine."""

CALLERS = ["embed", "embed_one", "embed_sync", "embed_one_sync"]
TEXTS = ["a hung query"]


def flights(embedder: CachedEmbedder) -> Flights:
    cache = embedder.cache
    sync = cache.sync if isinstance(cache, EmbeddingCache) else cache
    f = sync.flights
    assert isinstance(f, Flights)
    return f


def call(embedder: CachedEmbedder, caller: str) -> Any:
    """One call of `caller`, made the way its users make it: awaited in a fresh
    event loop for the async ones, directly for the sync ones."""
    if caller == "embed_sync":
        return embedder.embed_sync(TEXTS)
    if caller == "embed_one_sync":
        return embedder.embed_one_sync(TEXTS[0])
    method = getattr(embedder, caller)
    arg = TEXTS if caller == "embed" else TEXTS[0]

    async def main() -> Any:
        before = asyncio.all_tasks()
        try:
            return await method(arg)
        finally:
            assert asyncio.all_tasks() == before, "a task of the call is left running"

    return asyncio.run(main())


def timed_out(fn: Callable[[], Any]) -> float:
    """Seconds `fn` took to raise FlightTimeoutError for its model call (it must;
    the cache's get_or_compute names the embedder's compute)."""
    start = time.monotonic()
    with pytest.raises(FlightTimeoutError, match="did not finish within the timeout"):
        fn()
    return time.monotonic() - start


MODEL_THREAD = "embcache embed_fn"
"""The name prefix of a CachedEmbedder's model threads."""


def other_threads() -> set[threading.Thread]:
    """The threads alive, but an embedder's model threads (persistent workers,
    at most ``model_threads`` of them: tests/embedder/test_embedder_model_threads.py)."""
    return {t for t in threading.enumerate() if not t.name.startswith(MODEL_THREAD)}


def wait_for_threads(expected: set[threading.Thread]) -> None:
    end = time.monotonic() + TIMEOUT
    while other_threads() - expected:
        assert time.monotonic() < end, f"threads left running: {other_threads() - expected}"
        time.sleep(0.005)


@pytest.mark.parametrize("caller", CALLERS)
def test_an_async_model_is_cancelled_at_the_timeout(caller: str) -> None:
    events: list[str] = []

    async def model(texts: list[str]) -> np.ndarray:
        events.append("started")
        try:
            await asyncio.sleep(HANG)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        finally:
            events.append("finally")
        return np.ones((len(texts), DIM))  # pragma: no cover - never reached

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=LIMIT)
    threads = other_threads()
    took = timed_out(lambda: call(embedder, caller))
    assert LIMIT * 0.9 <= took < LIMIT + SLACK
    # cancelled before the call returned: its handlers have run, nothing of it runs on
    assert events == ["started", "cancelled", "finally"]
    assert other_threads() == threads, "a thread of the call is left running"
    assert len(embedder.cache) == 0 and flights(embedder).in_flight() == 0
    assert embedder.stats.model_calls == 0  # a call that raised is not counted


@pytest.mark.parametrize("caller", CALLERS)
def test_a_sync_model_is_abandoned_at_the_timeout_and_finishes_unused(
    caller: str,
) -> None:
    release = threading.Event()
    finished = threading.Event()

    def model(texts: list[str]) -> np.ndarray:
        release.wait(HANG)
        finished.set()
        return np.ones((len(texts), DIM))

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=LIMIT)
    threads = other_threads()
    try:
        took = timed_out(lambda: call(embedder, caller))
        assert LIMIT * 0.9 <= took < LIMIT + SLACK
        assert not finished.is_set()
        assert flights(embedder).in_flight() == 0
    finally:
        release.set()
    assert finished.wait(TIMEOUT)
    wait_for_threads(threads)
    time.sleep(0.05)  # the late answer had its chance to be (wrongly) stored
    assert len(embedder.cache) == 0  # the late answer was dropped, not stored


@pytest.mark.parametrize("caller", ["embed_sync", "embed_one_sync"])
def test_a_sync_model_returning_a_hung_awaitable_is_cancelled_at_the_timeout(
    caller: str,
) -> None:
    events: list[str] = []

    async def answer(n: int) -> np.ndarray:
        try:
            await asyncio.sleep(HANG)
        finally:
            events.append("finally")
        return np.ones((n, DIM))  # pragma: no cover - never reached

    def model(texts: list[str]) -> Any:
        return answer(len(texts))

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=LIMIT)
    threads = other_threads()
    took = timed_out(lambda: call(embedder, caller))
    assert took < LIMIT + SLACK
    assert events == ["finally"]
    wait_for_threads(threads)
    assert len(embedder.cache) == 0 and flights(embedder).in_flight() == 0


@pytest.mark.parametrize("caller", ["embed_sync", "embed_one_sync"])
def test_an_async_model_blocked_in_a_worker_thread_does_not_hold_a_sync_caller(
    caller: str,
) -> None:
    """The model awaits a blocking call it handed to a worker thread; the
    caller's event loop is not kept open waiting for that thread."""
    release = threading.Event()

    async def model(texts: list[str]) -> np.ndarray:
        await asyncio.to_thread(release.wait, HANG)
        return np.ones((len(texts), DIM))

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=LIMIT)
    threads = other_threads()
    try:
        took = timed_out(lambda: call(embedder, caller))
        assert took < LIMIT + SLACK
    finally:
        release.set()
    wait_for_threads(threads)
    assert len(embedder.cache) == 0 and flights(embedder).in_flight() == 0


@pytest.mark.parametrize("caller", ["embed", "embed_one"])
def test_a_hung_sync_model_does_not_keep_the_callers_event_loop_from_closing(
    caller: str,
) -> None:
    """asyncio.run waits for its default executor's threads when it closes: a
    hung model run there would hold the whole program long after the timeout."""
    release = threading.Event()

    def model(texts: list[str]) -> np.ndarray:
        release.wait(HANG)
        return np.ones((len(texts), DIM))

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=LIMIT)
    threads = other_threads()
    try:
        took = timed_out(lambda: call(embedder, caller))  # asyncio.run returned
        assert took < LIMIT + SLACK
    finally:
        release.set()
    wait_for_threads(threads)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("kind", ["async", "sync", "sync returning an awaitable"])
def test_a_model_within_the_timeout_answers_as_without_one(caller: str, kind: str) -> None:
    seen_threads: list[int] = []

    def rows(texts: list[str]) -> np.ndarray:
        return np.stack([np.full(DIM, len(t), dtype=np.float32) for t in texts])

    async def async_model(texts: list[str]) -> np.ndarray:
        await asyncio.sleep(0.01)
        return rows(texts)

    def sync_model(texts: list[str]) -> np.ndarray:
        seen_threads.append(threading.get_ident())
        return rows(texts)

    def awaitable_model(texts: list[str]) -> Any:
        return async_model(texts)

    model = {"async": async_model, "sync": sync_model}.get(kind, awaitable_model)
    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=5.0)
    threads = other_threads()
    got = call(embedder, caller)
    expected = rows(TEXTS)
    np.testing.assert_array_equal(
        got, expected if caller == "embed" or caller == "embed_sync" else expected[0]
    )
    np.testing.assert_array_equal(call(embedder, caller), got)  # a hit now
    assert embedder.stats.model_calls == 1
    wait_for_threads(threads)


@pytest.mark.parametrize("caller", CALLERS)
def test_a_sync_models_own_error_reaches_the_caller_unchanged_under_a_timeout(
    caller: str,
) -> None:
    error = ConnectionError("the embedding service is down")

    def model(texts: list[str]) -> np.ndarray:
        raise error

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=5.0)
    with pytest.raises(ConnectionError) as info:
        call(embedder, caller)
    assert info.value is error
    assert len(embedder.cache) == 0 and flights(embedder).in_flight() == 0


def test_a_sync_caller_waiting_on_a_timed_out_owner_computes_the_text_itself() -> None:
    """The owner's flight is abandoned at its timeout (not failed with it): a
    caller waiting for the same text with a longer timeout claims it again."""
    first = threading.Event()
    calls: list[str] = []

    def model(texts: list[str]) -> np.ndarray:
        calls.append(texts[0])
        if len(calls) == 1:
            first.set()
            time.sleep(LIMIT * 3)  # the first call outlasts the owner's timeout
        return np.full((len(texts), DIM), 7.0)

    cache = SyncEmbeddingCache(100)
    hasty = CachedEmbedder(model, "m", cache=cache, timeout=LIMIT)
    patient = CachedEmbedder(model, "m", cache=cache, timeout=TIMEOUT)
    out: dict[str, Any] = {}

    def owner() -> None:
        try:
            hasty.embed_sync(TEXTS)
        except FlightTimeoutError as exc:
            out["owner"] = exc

    thread = threading.Thread(target=owner, daemon=True)
    thread.start()
    assert first.wait(TIMEOUT)
    np.testing.assert_array_equal(patient.embed_sync(TEXTS), np.full((1, DIM), 7.0))
    thread.join(TIMEOUT)
    assert isinstance(out["owner"], FlightTimeoutError)
    assert calls == TEXTS * 2


def test_embedder_over_an_embedding_cache_holds_the_timeout_too() -> None:
    async def model(texts: list[str]) -> np.ndarray:
        await asyncio.sleep(HANG)
        return np.ones((len(texts), DIM))  # pragma: no cover - never reached

    embedder = CachedEmbedder(model, "m", cache=EmbeddingCache(100), timeout=LIMIT)
    for caller in CALLERS:
        assert timed_out(functools.partial(call, embedder, caller)) < LIMIT + SLACK
    assert len(embedder.cache) == 0 and flights(embedder).in_flight() == 0


@pytest.mark.parametrize("caller", ["embed", "embed_sync"])
@pytest.mark.parametrize("kind", ["async", "sync"])
def test_the_deadline_covers_all_the_batches_of_a_call(caller: str, kind: str) -> None:
    """Each model call is quick, but together they outlast the timeout: the call
    stops at the deadline, not after its last batch, and stores nothing."""
    step = LIMIT / 2

    async def async_model(texts: list[str]) -> np.ndarray:
        await asyncio.sleep(step)
        return np.ones((len(texts), DIM))

    def sync_model(texts: list[str]) -> np.ndarray:
        time.sleep(step)
        return np.ones((len(texts), DIM))

    model = async_model if kind == "async" else sync_model
    embedder = CachedEmbedder(
        model, "m", cache=SyncEmbeddingCache(100), batch_size=1, timeout=LIMIT
    )
    texts = [f"text {i}" for i in range(8)]  # 8 batches: 4 x LIMIT in all

    def run_call() -> Any:
        if caller == "embed_sync":
            return embedder.embed_sync(texts)
        return asyncio.run(embedder.embed(texts))

    threads = other_threads()
    took = timed_out(run_call)
    assert took < LIMIT + SLACK and took < 8 * step
    assert len(embedder.cache) == 0 and flights(embedder).in_flight() == 0
    wait_for_threads(threads)


HUNG_PROGRAM = """
import asyncio, sys, threading, time
import numpy as np
from embcache import CachedEmbedder, FlightTimeoutError, SyncEmbeddingCache

def model(texts):
    time.sleep(1.0)  # long past the timeout (0.2 s)
    print("model call finished", flush=True)
    return np.ones((len(texts), 4))

embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(10), timeout=0.2)
try:
    if sys.argv[1] == "embed":
        asyncio.run(embedder.embed(["a"]))
    else:
        embedder.embed_sync(["a"])
except FlightTimeoutError:
    print("timed out", flush=True)
"""


@pytest.mark.parametrize("caller", ["embed", "embed_sync"])
def test_the_interpreter_exits_once_an_abandoned_sync_model_call_is_over(
    caller: str, tmp_path: Path
) -> None:
    """The caller (and its event loop) is free at the deadline; the interpreter
    waits at exit for the model call still running, as for any executor's
    worker, and then exits normally."""
    done = run_python(["-c", HUNG_PROGRAM, caller], cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "timed out\nmodel call finished\n"
