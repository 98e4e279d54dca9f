"""Model calls held to a flight's deadline, however they run (CachedEmbedder's
``timeout``: its model may be sync or async, its caller a thread or a task).

* ``ThreadCall``: a sync call in a daemon thread of its own, waited for until a
  deadline by a blocking caller (``result``) or an awaiting one
  (``result_async``). A thread cannot be interrupted: at the deadline the caller
  stops waiting (ComputeTimeout) and the call finishes in its thread, which then
  ends, its answer dropped. A daemon thread, not an executor's: a hung call keeps
  neither the caller's event loop nor the interpreter from closing.
* ``run_until``: an awaitable run to completion from a thread with no running
  event loop, in an event loop of its own, cancelled at the deadline
  (ComputeTimeout); every task it leaves is cancelled and awaited, and the loop
  is closed without waiting for the threads of its default executor (which
  ``asyncio.run`` would wait for, however long they take).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable
from typing import Any, Callable

from embcache._flight_errors import ComputeTimeout, bounded, seconds_left

__all__ = ["ThreadCall", "run_until"]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ThreadCall:
    """``fn(arg)`` running in a new daemon thread (in a copy of the caller's
    context variables, as ``asyncio.to_thread`` runs it)."""

    __slots__ = ("_lock", "_done", "_wake", "_result", "_error")

    def __init__(self, fn: Callable[[Any], Any], arg: Any, name: str) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._wake: Callable[[], None] | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        context = contextvars.copy_context()
        thread = threading.Thread(target=self._run, args=(context, fn, arg), name=name, daemon=True)
        thread.start()

    def _run(self, context: contextvars.Context, fn: Callable[[Any], Any], arg: Any) -> None:
        try:
            self._result = context.run(fn, arg)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._error = exc
        with self._lock:
            self._done.set()
            wake, self._wake = self._wake, None
        if wake is not None:
            wake()

    def _outcome(self) -> Any:
        error = self._error
        if error is not None:
            self._error = None  # no cycle through the traceback
            raise error
        return self._result

    def result(self, deadline: float | None, what: str, timeout: float | None) -> Any:
        """The call's answer (its exception raised), blocking this thread until
        `deadline` at most: then ComputeTimeout, the call left to finish."""
        if not self._done.wait(seconds_left(deadline)):
            raise ComputeTimeout(what, timeout)
        return self._outcome()

    async def result_async(self) -> Any:
        """The call's answer, awaited without blocking the loop. Cancelling the
        awaiting task (the caller's deadline) leaves the call to finish."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        with self._lock:
            pending = not self._done.is_set()
            if pending:
                self._wake = wake
        if pending:
            try:
                await future
            finally:
                with self._lock:
                    self._wake = None
        return self._outcome()


def run_until(
    awaitable: Awaitable[Any], deadline: float | None, what: str, timeout: float | None
) -> Any:
    """`awaitable`'s result, run in a new event loop of this thread (which must
    have none running), cancelled at `deadline` (ComputeTimeout)."""
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
