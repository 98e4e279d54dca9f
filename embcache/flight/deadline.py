"""Model calls held to a flight's deadline, however they run (CachedEmbedder's
``timeout``: its model may be sync or async, its caller a thread or a task).

* ``ModelThreads``: the bounded, persistent worker threads of one embedder (a
  ``concurrent.futures.ThreadPoolExecutor`` of ``size`` workers, made at its
  first use) that run its sync model calls under a deadline. The caller waits
  for the call's future until the deadline (blocking: ``call``; awaiting:
  ``call_async``); then it raises ComputeTimeout and the call is abandoned: if
  it has not started it never will (its future is cancelled), else it finishes
  in its worker, its answer unused. No thread is started per call, and at most
  ``size`` model calls run at once, abandoned ones included. The workers are
  ordinary executor workers: the interpreter waits at exit for a model call
  still running in one (a thread cannot be stopped inside native code).
  A model call made from inside one of these workers (a model that asks its
  own embedder for other texts) runs in that worker directly: queued behind
  itself it would only wait for its own deadline.
* ``run_until``: an awaitable run to completion from a thread with no running
  event loop, in an event loop of its own, cancelled at the deadline
  (ComputeTimeout); every task it leaves is cancelled and awaited, and the loop
  is closed without waiting for the threads of its default executor (which
  ``asyncio.run`` would wait for, however long they take).

Neither starts a model call once the deadline has passed (``check_deadline``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import os
import threading
import time
from collections.abc import Awaitable
from typing import Any, Callable

from embcache.flight.timeouts import ComputeTimeout, bounded, seconds_left

__all__ = ["ModelThreads", "check_deadline", "run_until"]

_worker = threading.local()
"""``pool``: the token of the ModelThreads whose worker this thread is (unset elsewhere)."""


def _mark_worker(token: object) -> None:
    _worker.pool = token


def check_deadline(deadline: float | None, what: str, timeout: float | None) -> None:
    """ComputeTimeout if `deadline` has passed: a model call is not started then."""
    if deadline is not None and time.monotonic() >= deadline:
        raise ComputeTimeout(what, timeout)


class ModelThreads:
    """At most `size` worker threads for one embedder's sync model calls under a
    deadline, made when first needed (again in a forked child)."""

    __slots__ = ("_size", "_lock", "_pool", "_pid", "_token")

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pid = 0
        self._token = object()  # what its workers hold: never the embedder itself

    @property
    def size(self) -> int:
        return self._size

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            pid = os.getpid()
            if self._pool is None or self._pid != pid:  # none yet, or the parent's
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self._size,
                    thread_name_prefix="embcache embed_fn",
                    initializer=_mark_worker,
                    initargs=(self._token,),
                )
                self._pid = pid
            return self._pool

    def on_worker(self) -> bool:
        """True in one of these workers."""
        return getattr(_worker, "pool", None) is self._token

    def _submit(self, fn: Callable[[Any], Any], arg: Any) -> concurrent.futures.Future[Any]:
        # in a copy of the caller's context variables, as asyncio.to_thread runs it
        return self._executor().submit(contextvars.copy_context().run, fn, arg)

    def call(
        self, fn: Callable[[Any], Any], arg: Any, deadline: float, what: str, timeout: float | None
    ) -> Any:
        """``fn(arg)`` in a worker, this thread blocking until `deadline` at most
        (then ComputeTimeout, the call abandoned); its exception raised here."""
        check_deadline(deadline, what, timeout)
        if self.on_worker():
            return fn(arg)
        future = self._submit(fn, arg)
        try:
            future.exception(seconds_left(deadline))  # waits; raises only on timeout
        except concurrent.futures.TimeoutError:
            future.cancel()  # not started yet: it never will be
            raise ComputeTimeout(what, timeout) from None
        except BaseException:  # KeyboardInterrupt while waiting
            future.cancel()
            raise
        return future.result()

    async def call_async(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """``fn(arg)`` in a worker, awaited without blocking the loop. Cancelling
        the awaiting task (the caller's deadline) abandons the call."""
        if self.on_worker():
            return fn(arg)
        future = self._submit(fn, arg)
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            future.cancel()
            raise


def run_until(
    awaitable: Awaitable[Any], deadline: float | None, what: str, timeout: float | None
) -> Any:
    """`awaitable`'s result, run in a new event loop of this thread (which must
    have none running), cancelled at `deadline` (ComputeTimeout; not started at
    all when `deadline` has passed)."""
    if deadline is not None and time.monotonic() >= deadline:
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # never awaited: close it quietly
        raise ComputeTimeout(what, timeout)
    loop = asyncio.new_event_loop()
    try:
        main = bounded(awaitable, deadline, what, timeout) if deadline is not None else awaitable
        return loop.run_until_complete(_as_coroutine(main))
    finally:
        try:
            _cancel_the_rest(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()  # its default executor is shut down without waiting


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _cancel_the_rest(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks still pending on `loop` and let them finish cancelling."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
