"""CachedEmbedder's model threads: a sync model under a ``timeout`` runs on one
bounded, persistent pool of the embedder's (``model_threads``, default 1), and
the deadline rules that go with it.

* at most ``model_threads`` model calls run at once, whoever calls (threads,
  tasks, abandoned calls included), on the same worker threads call after call;
* a model call is never started once the caller's deadline has passed, so a
  timed-out text is not sent to the model again and again;
* a model that asks its own embedder for the texts it is embedding fails at
  once with the re-entry CallContextError (a RuntimeError), though it runs in
  a worker thread, and two such models waiting on each other fail with the
  cycle CallContextError;
* an async model that swallows its cancellation and answers late: the answer
  is dropped, the caller gets FlightTimeoutError;
* a process whose abandoned model call is still inside native code (torch)
  exits normally once that call is over.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TIMEOUT, run_python

from embcache import CachedEmbedder, SyncEmbeddingCache
from embcache.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    CallContextError,
    FlightTimeoutError,
)

DIM = 4
LIMIT = 0.3
CALLERS = ["embed", "embed_one", "embed_sync", "embed_one_sync"]


def call(embedder: CachedEmbedder, caller: str, text: str) -> Any:
    if caller == "embed_sync":
        return embedder.embed_sync([text])
    if caller == "embed_one_sync":
        return embedder.embed_one_sync(text)
    if caller == "embed":
        return asyncio.run(embedder.embed([text]))
    return asyncio.run(embedder.embed_one(text))


class Gauge:
    """How many model calls run at once (the peak), and in which threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.threads: set[int] = set()

    def __enter__(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.get_ident())

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.running -= 1


def model_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("embcache embed_fn")]


def test_concurrent_awaited_calls_share_one_model_thread_by_default() -> None:
    gauge = Gauge()

    def model(texts: list[str]) -> np.ndarray:
        with gauge:
            time.sleep(0.005)
        return np.ones((len(texts), DIM), np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(1000), timeout=60)

    async def main() -> None:
        await asyncio.gather(*(embedder.embed([f"t{i}", f"u{i}"]) for i in range(40)))

    asyncio.run(main())
    assert gauge.peak == 1
    assert len(gauge.threads) == 1
    (worker,) = (t for t in model_threads() if t.ident in gauge.threads)  # alive, and ours
    assert embedder.stats.model_calls == 40


def test_concurrent_blocking_calls_share_one_model_thread_by_default() -> None:
    gauge = Gauge()

    def model(texts: list[str]) -> np.ndarray:
        with gauge:
            time.sleep(0.005)
        return np.ones((len(texts), DIM), np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(1000), timeout=60)

    def caller(i: int) -> None:
        for j in range(5):
            embedder.embed_sync([f"{i} {j}", f"{i} {j}!"])

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert gauge.peak == 1 and len(gauge.threads) == 1
    assert embedder.stats.model_calls == 40


def test_model_threads_allows_that_many_calls_at_once_and_no_more() -> None:
    together = threading.Barrier(3, timeout=TIMEOUT)  # passes only with 3 calls at once
    gauge = Gauge()

    def model(texts: list[str]) -> np.ndarray:
        with gauge:
            together.wait()
            time.sleep(0.01)
        return np.ones((len(texts), DIM), np.float32)

    embedder = CachedEmbedder(
        model, "m", cache=SyncEmbeddingCache(1000), timeout=60, model_threads=3
    )

    async def main() -> None:
        await asyncio.gather(*(embedder.embed([f"t{i}", f"u{i}"]) for i in range(12)))

    asyncio.run(main())
    assert gauge.peak == 3 and len(gauge.threads) == 3


def test_calls_with_a_timeout_reuse_the_same_model_thread() -> None:
    seen: set[int] = set()

    def model(texts: list[str]) -> np.ndarray:
        seen.add(threading.get_ident())
        return np.ones((len(texts), DIM), np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(1000), timeout=60)
    for i in range(30):
        embedder.embed_sync([f"a{i}", f"b{i}"])
        embedder.embed_one_sync(f"c{i}")
        asyncio.run(embedder.embed([f"d{i}", f"e{i}"]))
    assert len(seen) == 1 and threading.get_ident() not in seen


@pytest.mark.parametrize("bad", [True, 1.0, "2", None])
def test_model_threads_must_be_an_int(bad: object) -> None:
    with pytest.raises(ArgumentTypeError, match="model_threads must be an int"):
        CachedEmbedder(lambda t: t, "m", model_threads=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1])
def test_model_threads_must_be_at_least_one(bad: int) -> None:
    with pytest.raises(ArgumentValueError, match="model_threads must be >= 1"):
        CachedEmbedder(lambda t: t, "m", model_threads=bad)


# -- the deadline is never spent twice ---------------------------------------------------


def test_callers_timed_out_together_do_not_call_the_model_again() -> None:
    """Ten threads ask for the same text; the model outlasts their timeout. The
    owner's flight is abandoned at the deadline and its waiters, whose time is
    up too, raise FlightTimeoutError without calling the model."""
    release = threading.Event()
    calls: list[list[str]] = []

    def model(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        release.wait(TIMEOUT)
        return np.ones((len(texts), DIM), np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=LIMIT)
    results: list[str] = []

    def caller() -> None:
        try:
            embedder.embed_sync(["same", "other"])
            results.append("ok")
        except FlightTimeoutError:
            results.append("timeout")

    threads = [threading.Thread(target=caller) for _ in range(10)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
    finally:
        release.set()
    assert results == ["timeout"] * 10
    assert calls == [["same", "other"]]


def test_a_retried_text_is_not_sent_to_a_hung_model_again_and_again() -> None:
    """A caller retrying after each timeout: the abandoned call still holds the
    model thread; each retry's call waits behind it and is dropped, unstarted,
    at its own deadline."""
    release = threading.Event()
    calls: list[list[str]] = []

    def model(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        release.wait(TIMEOUT)
        return np.ones((len(texts), DIM), np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=0.05)
    try:
        for _ in range(20):
            with pytest.raises(FlightTimeoutError):
                embedder.embed_sync(["same text"])
        assert calls == [["same text"]]
        assert len(model_threads()) >= 1
    finally:
        release.set()


@pytest.mark.parametrize("caller", ["embed", "embed_sync"])
def test_no_batch_is_sent_to_an_async_model_after_the_deadline(caller: str) -> None:
    """Batches one after another: the one that would start past the deadline
    is not started (an async model's coroutine would run up to its first await
    before the cancellation reached it)."""
    starts: list[float] = []
    t0 = time.monotonic()

    async def model(texts: list[str]) -> np.ndarray:
        starts.append(time.monotonic() - t0)
        time.sleep(LIMIT * 0.7)  # blocks: the deadline cannot cut it short
        await asyncio.sleep(0)
        return np.ones((len(texts), DIM), np.float32)

    embedder = CachedEmbedder(
        model, "m", cache=SyncEmbeddingCache(100), timeout=LIMIT, batch_size=1
    )
    texts = [f"t{i}" for i in range(4)]
    t0 = time.monotonic()
    with pytest.raises(FlightTimeoutError):
        if caller == "embed_sync":
            embedder.embed_sync(texts)
        else:
            asyncio.run(embedder.embed(texts))
    assert all(start < LIMIT for start in starts), starts
    assert len(embedder.cache) == 0


# -- re-entry and cycles through the model thread ---------------------------------------


@pytest.mark.parametrize("caller", CALLERS)
def test_a_model_asking_for_its_own_texts_fails_at_once_under_a_timeout(caller: str) -> None:
    embedder: CachedEmbedder
    calls: list[list[str]] = []

    def model(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        embedder.embed_sync(texts)  # would wait for itself
        return np.ones((len(texts), DIM), np.float32)  # pragma: no cover

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=5.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="from inside the compute that is computing it"):
        call(embedder, caller, "a text")
    assert time.monotonic() - start < 2.5  # at once, not at the 5 s deadline
    time.sleep(0.1)
    assert calls == [["a text"]]  # and not called again in the background
    assert len(embedder.cache) == 0 and embedder.cache.flights.in_flight() == 0


def test_a_model_may_embed_other_texts_with_its_own_embedder() -> None:
    """A call made from inside the model thread runs there directly (queued
    behind itself on the one model thread it would only time out)."""
    embedder: CachedEmbedder

    def model(texts: list[str]) -> np.ndarray:
        if texts == ["outer"]:
            inner = embedder.embed_sync(["inner"])
            return inner + 1
        return np.ones((len(texts), DIM), np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=5.0)
    np.testing.assert_array_equal(embedder.embed_sync(["outer"]), np.full((1, DIM), 2.0))
    np.testing.assert_array_equal(embedder.embed_one_sync("inner"), np.ones(DIM))


def test_two_models_waiting_on_each_other_fail_with_the_cycle_error() -> None:
    """ "x"'s model call asks for "y", "y"'s for "x", both in model threads:
    the second wait closes the cycle and is refused at once."""
    both_started = threading.Barrier(2, timeout=TIMEOUT)
    embedder: CachedEmbedder

    def model(texts: list[str]) -> np.ndarray:
        both_started.wait()
        other = "y" if texts == ["x"] else "x"
        embedder.embed_sync([other])
        return np.ones((len(texts), DIM), np.float32)  # pragma: no cover

    embedder = CachedEmbedder(
        model, "m", cache=SyncEmbeddingCache(100), timeout=5.0, model_threads=2
    )
    errors: dict[str, BaseException] = {}

    def caller(text: str) -> None:
        try:
            embedder.embed_sync([text])
        except BaseException as exc:  # noqa: BLE001 - recorded for the asserts
            errors[text] = exc

    start = time.monotonic()
    threads = [threading.Thread(target=caller, args=(t,)) for t in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert time.monotonic() - start < 2.5  # not the 5 s deadline
    assert set(errors) == {"x", "y"}
    assert all(type(e) is CallContextError for e in errors.values()), errors
    assert any("deadlock" in str(e) for e in errors.values()), errors
    assert len(embedder.cache) == 0 and embedder.cache.flights.in_flight() == 0


# -- an async model that swallows its cancellation ---------------------------------------


@pytest.mark.parametrize("caller", CALLERS)
def test_a_late_answer_after_a_swallowed_cancellation_is_dropped(caller: str) -> None:
    async def model(texts: list[str]) -> np.ndarray:
        try:
            await asyncio.sleep(TIMEOUT)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # "retry once", ignoring the cancellation
        return np.ones((len(texts), DIM), np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=LIMIT)
    with pytest.raises(FlightTimeoutError):
        call(embedder, caller, "a text")
    assert len(embedder.cache) == 0 and embedder.cache.flights.in_flight() == 0


# -- exit ----------------------------------------------------------------------------------

TORCH_PROGRAM = """
import asyncio, sys
import numpy as np
import torch
from embcache import CachedEmbedder, EmbeddingCache, FlightTimeoutError

a = torch.randn(400, 400)

def model(texts):
    for _ in range(400):
        torch.mm(a, a)  # native code, the GIL released
    return np.ones((len(texts), 4), np.float32)

embedder = CachedEmbedder(model, "m", cache=EmbeddingCache(dim=4), timeout=0.05)
try:
    if sys.argv[1] == "embed":
        asyncio.run(embedder.embed(["a", "b"]))
    else:
        embedder.embed_sync(["a", "b"])
except FlightTimeoutError:
    print("timed out")
"""


@pytest.mark.parametrize("caller", ["embed", "embed_sync"])
def test_a_process_exits_normally_with_a_timed_out_call_inside_torch(
    caller: str, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    done = run_python(["-c", TORCH_PROGRAM, caller], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "timed out\n"
    assert "terminate called" not in done.stderr


# -- fork ----------------------------------------------------------------------------------


def test_a_forked_child_gets_model_threads_of_its_own() -> None:
    """The parent's model thread does not exist in a forked child: the child
    makes its own instead of queueing calls for a worker that never runs them."""
    import os

    from forking import fork_and_run

    def model(texts: list[str]) -> np.ndarray:
        return np.full((len(texts), DIM), float(os.getpid() % 1000), np.float32)

    embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(100), timeout=5.0)
    embedder.embed_sync(["parent"])  # the parent's model thread exists now

    def child() -> bool:
        row = embedder.embed_one_sync("child")
        return bool(row[0] == float(os.getpid() % 1000))

    assert fork_and_run(child) == 0


REENTRY_WITHOUT_TIMEOUT = """
import asyncio
import numpy as np
from embcache import CachedEmbedder, SyncEmbeddingCache

def model(texts):
    embedder.embed_sync(texts)  # in asyncio.to_thread's worker: would wait for itself
    return np.ones((len(texts), 4), np.float32)

embedder = CachedEmbedder(model, "m", cache=SyncEmbeddingCache(10))
try:
    asyncio.run(embedder.embed(["a", "b"]))
except RuntimeError as exc:
    print(type(exc).__name__, "from inside the compute" in str(exc))
"""


def test_a_model_asking_for_its_own_texts_in_a_to_thread_worker_fails_at_once(
    tmp_path: Path,
) -> None:
    """Without a timeout, ``await embed`` runs a sync model in asyncio.to_thread's
    worker: the re-entry is seen there too (it used to wait forever)."""
    done = run_python(["-c", REENTRY_WITHOUT_TIMEOUT], cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "CallContextError True\n"
