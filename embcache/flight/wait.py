"""Single flight, the waiting side: a flight, its outcome, and waiting for it.

A ``Flight`` is the set of keys one caller is computing (embcache.flight.registry keeps
the registry of them). Another caller that needs one of its keys waits for it:
``block_on`` from a thread (it blocks), ``wait_for`` from an asyncio task (it
awaits a future of its own loop). Both first refuse a wait that would never end
(``check_deadlock``), record the wait in the registry's ``waiting`` map (caller
-> the flight it waits on) for the next caller's check, and take it out again
however the wait ends. ``lock`` is the registry's lock, which guards the map and
every flight's ``done``/``wakeups``; it is never held while waiting.

``computing`` (a context variable) holds the flights whose compute the current
code runs inside, outermost first; it is set by the owner around its compute
and copied into any worker thread or task that compute runs the model in
(``asyncio.to_thread``, an embedder's model threads, the tasks of an event
loop), so a compute running in another thread than its owner's still counts as
that flight's owner: asking for the flight's own keys there is a re-entry, and
a wait it makes is followed (``Flight.inner``) when another caller's deadlock
check reaches the flight.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Hashable
from typing import Callable

from embcache.flight.call import Matrix
from embcache.flight.timeouts import (
    cycle_error,
    loop_error,
    seconds_left,
    stack_error,
    wait_timeout_error,
    waiter_copy,
)

__all__ = ["Flight", "block_on", "check_deadlock", "computing", "outcome", "wait_for"]


class Flight:
    """The keys one caller is computing. Settled once, under the flights lock:
    ``rows`` set (success), ``error`` set (failure), or neither (abandoned)."""

    __slots__ = ("owner", "thread", "loop", "done", "rows", "error", "wakeups", "inner")

    def __init__(
        self, owner: Hashable, thread: int, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        self.owner = owner
        self.thread = thread
        self.loop = loop
        self.done = False
        self.rows: Matrix | None = None
        self.error: BaseException | None = None
        self.wakeups: list[Callable[[], None]] = []
        self.inner: list[Flight] = []
        """Flights that code running inside this flight's compute waits on now."""


computing: contextvars.ContextVar[tuple[Flight, ...]] = contextvars.ContextVar(
    "embcache_computing", default=()
)
"""The flights whose compute the current code runs inside (outermost first)."""


def outcome(flight: Flight) -> Matrix | None:
    """A settled flight's rows; its error raised (this waiter's own copy,
    chained from the owner's); None if it was abandoned."""
    error = flight.error
    if error is not None:
        own = waiter_copy(error)
        if own is error:
            raise error
        raise own from error
    return flight.rows


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _waker(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], thread: int
) -> Callable[[], None]:
    """A callable, safe from any thread, that resolves `future` on `loop`."""

    def wake() -> None:
        if threading.get_ident() == thread:
            _resolve(future)
        else:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the waiter's loop is closed: nobody waits any more
                pass

    return wake


def check_deadlock(
    waiting: dict[Hashable, Flight],
    flight: Flight,
    me: Hashable,
    thread: int,
    blocking: bool,
    within: tuple[Flight, ...] = (),
) -> None:
    """Under the lock: RuntimeError if waiting for `flight` would never end.

    Follows owner -> flight it waits on, flight -> the flights its compute
    (wherever it runs) waits on, and for a task owner also the thread running
    its loop -> flight that thread blocks on. `within` is ``computing.get()``:
    reaching one of those flights is a cycle too. Every wait is checked as it
    starts, so no cycle can form that does not pass through the caller
    starting it."""
    todo = [flight]
    seen: set[int] = set()
    while todo:
        link = todo.pop()
        if link.done or id(link) in seen:
            continue
        seen.add(id(link))
        if link.owner == me or link in within:
            raise cycle_error()
        if link.thread == thread:
            if link.loop is None:
                raise stack_error()
            if blocking:
                raise loop_error()
        nxt = waiting.get(link.owner)
        if nxt is not None:
            todo.append(nxt)
        todo.extend(link.inner)
        if link.loop is not None:
            nxt = waiting.get(link.thread)
            if nxt is not None:
                todo.append(nxt)


def _start_waiting(
    lock: threading.Lock,
    waiting: dict[Hashable, Flight],
    flight: Flight,
    me: Hashable,
    thread: int,
    blocking: bool,
    wake: Callable[[], None],
) -> tuple[Flight, ...] | None:
    """Under the lock: None if `flight` has settled already; else refuse a wait
    that would never end, record ours (`wake` among the flight's wakeups, `me`
    in ``waiting``, the flight in the ``inner`` of the flights we compute
    within) and return those flights (``computing.get()``) for _stop_waiting."""
    within = computing.get()
    with lock:
        if flight.done:
            return None
        check_deadlock(waiting, flight, me, thread, blocking, within)
        flight.wakeups.append(wake)
        waiting[me] = flight
        for outer in within:
            outer.inner.append(flight)
    return within


def _stop_waiting(
    lock: threading.Lock,
    waiting: dict[Hashable, Flight],
    flight: Flight,
    me: Hashable,
    wake: Callable[[], None],
    within: tuple[Flight, ...],
) -> None:
    """Under the lock: take back what _start_waiting recorded, however the wait
    ended."""
    with lock:
        del waiting[me]
        for outer in within:
            outer.inner.remove(flight)
        if not flight.done:
            flight.wakeups.remove(wake)


def block_on(
    lock: threading.Lock,
    waiting: dict[Hashable, Flight],
    flight: Flight,
    me: int,
    deadline: float | None,
    timeout: float | None,
) -> None:
    """Block this thread until `flight` settles (RuntimeError if it never would;
    FlightTimeoutError if it has not by `deadline`)."""
    settled = threading.Event()
    wake = settled.set
    within = _start_waiting(lock, waiting, flight, me, me, True, wake)
    if within is None:
        return
    try:
        if not settled.wait(seconds_left(deadline)) and not flight.done:
            raise wait_timeout_error(timeout)
    finally:
        _stop_waiting(lock, waiting, flight, me, wake, within)


async def wait_for(
    lock: threading.Lock,
    waiting: dict[Hashable, Flight],
    flight: Flight,
    me: Hashable,
    thread: int,
    loop: asyncio.AbstractEventLoop,
    deadline: float | None,
    timeout: float | None,
) -> None:
    """Wait, without blocking the loop, until `flight` settles (FlightTimeoutError
    if it has not by `deadline`). Cancelling this wait, or its timing out,
    leaves the flight alone (the future awaited is this waiter's own)."""
    future: asyncio.Future[None] = loop.create_future()
    wake = _waker(loop, future, thread)
    within = _start_waiting(lock, waiting, flight, me, thread, False, wake)
    if within is None:
        return
    try:
        if deadline is None:
            await future
        else:
            wait = seconds_left(deadline) or 0.0
            handle = loop.call_at(loop.time() + wait, _resolve, future)
            try:
                await future
            finally:
                handle.cancel()
            if not flight.done:
                raise wait_timeout_error(timeout)
    finally:
        _stop_waiting(lock, waiting, flight, me, wake, within)
