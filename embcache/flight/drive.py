"""The two drivers of one get_or_compute call: blocking (a thread) and asyncio (a
task). The call itself is written once, in embcache.flight.registry, as a
generator that does all its bookkeeping and only *yields* what it cannot do
without knowing how it runs; a driver does that and sends the answer back::

    (WAIT, flight)         wait until `flight` settles
                           blocking: wait.block_on      asyncio: await wait.wait_for
    (AWAIT, awaitable)     an awaitable the owner's step needs (compute's result,
                           the read-through source's answer), bounded by the
                           call's deadline; the answer is sent back
                           blocking: thrown back in as ArgumentTypeError (the
                           synchronous call cannot await)
                           asyncio: awaited (cancelled at the deadline:
                           timeouts.bounded raises ComputeTimeout)
    (WRITE, awaitable)     the write-back after the owner settled: awaited
                           whole (no deadline; the rows are ours already)

An exception of an awaited step is thrown back into the generator at its yield,
so the owner's own handlers (settle with the error, abandon on cancel) run
exactly as for a compute called directly. The generator's return value is the
call's answer.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Generator, Hashable
from typing import Any

from embcache.errors import ArgumentTypeError
from embcache.flight.call import Matrix
from embcache.flight.timeouts import bounded
from embcache.flight.wait import Flight, block_on, wait_for

__all__ = ["AWAIT", "WAIT", "WRITE", "Steps", "block", "run"]

WAIT = 0
AWAIT = 1
WRITE = 2
DONE = 3  # not yielded by the steps: the drivers' own mark of the end

Steps = Generator[tuple[int, Any], Any, Matrix]
"""One call's generator: yields ``(kind, what)`` steps, returns the matrix."""


def awaitable_error(result: object, what: str) -> ArgumentTypeError:
    """What the synchronous get_or_compute raises for an awaitable `result` of
    compute (a coroutine is closed first: it is never awaited)."""
    if inspect.iscoroutine(result):
        result.close()
    return ArgumentTypeError(
        f"{what} returned an awaitable; the synchronous get_or_compute "
        "cannot await it (use EmbeddingCache.get_or_compute)"
    )


def _next(steps: Steps, send: Any, error: BaseException | None) -> tuple[int, Any]:
    """The next step of `steps`, given the answer to the last one (`send`) or
    the error it raised (thrown into the step that asked); ``(DONE, matrix)``
    once the call has returned."""
    try:
        return steps.send(send) if error is None else steps.throw(error)
    except StopIteration as done:
        return DONE, done.value


def block(
    steps: Steps,
    lock: threading.Lock,
    waiting: dict[Hashable, Flight],
    me: int,
    what: str,
    deadline: float | None,
    timeout: float | None,
) -> Matrix:
    """Run `steps` in this thread: waits block it, awaitables are refused."""
    error: BaseException | None = None
    while True:
        kind, arg = _next(steps, None, error)
        error = None
        if kind == DONE:
            return arg  # type: ignore[no-any-return]
        if kind == WAIT:
            block_on(lock, waiting, arg, me, deadline, timeout)
        else:
            error = awaitable_error(arg, what)


async def run(
    steps: Steps,
    lock: threading.Lock,
    waiting: dict[Hashable, Flight],
    me: Hashable,
    thread: int,
    loop: asyncio.AbstractEventLoop,
    what: str,
    deadline: float | None,
    timeout: float | None,
) -> Matrix:
    """Run `steps` in the current task: waits and awaitables are awaited."""
    send: Any = None
    error: BaseException | None = None
    while True:
        kind, arg = _next(steps, send, error)
        send = error = None
        if kind == DONE:
            return arg  # type: ignore[no-any-return]
        if kind == WAIT:
            await wait_for(lock, waiting, arg, me, thread, loop, deadline, timeout)
            continue
        try:
            if kind == AWAIT and deadline is not None:
                send = await bounded(arg, deadline, what, timeout)
            else:
                send = await arg
        except BaseException as exc:  # back to the step that asked (it settles, abandons)
            error = exc
