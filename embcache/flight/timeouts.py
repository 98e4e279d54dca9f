"""What single flight raises and how it bounds waiting: FlightTimeoutError and
the timeout arithmetic, the copy of an owner's error each waiter gets, and the
CallContextErrors that refuse a wait which could never end. Used by
embcache.flight.registry. (A `timeout` argument is checked by
embcache.core.checks.check_seconds, the one rule for seconds.)
"""

from __future__ import annotations

import asyncio
import copy
import sys
import time
from collections.abc import Awaitable
from typing import Any

from embcache.errors import CallContextError, FlightTimeoutError

__all__ = [
    "ComputeTimeout",
    "FlightTimeoutError",
    "bounded",
    "compute_timeout_error",
    "cycle_error",
    "deadline_after",
    "loop_error",
    "reentry_error",
    "seconds_left",
    "stack_error",
    "stop_iteration_error",
    "wait_timeout_error",
    "waiter_copy",
]


def deadline_after(timeout: float | None) -> float | None:
    """The monotonic time `timeout` seconds from now (None: no deadline)."""
    return None if timeout is None else time.monotonic() + timeout


def seconds_left(deadline: float | None) -> float | None:
    """Seconds until `deadline`, never negative (None: no deadline)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def wait_timeout_error(timeout: float | None) -> FlightTimeoutError:
    return FlightTimeoutError(
        f"get_or_compute: timed out after {timeout} s waiting for keys another caller "
        "is computing (that computation goes on)"
    )


def compute_timeout_error(what: str, timeout: float | None) -> FlightTimeoutError:
    return FlightTimeoutError(
        f"get_or_compute: {what} did not finish within the timeout of {timeout} s "
        "(an awaited call was cancelled, a call running in a worker thread finishes "
        "there unused; nothing of it is stored)"
    )


def stop_iteration_error(what: str, exc: StopIteration) -> RuntimeError:
    error = RuntimeError(f"{what} raised StopIteration")
    error.__cause__ = exc
    return error


class ComputeTimeout(FlightTimeoutError):
    """Internal: an owner's compute outlasted the call's timeout (awaited, or
    waited for in its worker thread). The registry abandons the owner's flight
    and raises ``compute_timeout_error(what, timeout)`` in its place."""

    def __init__(self, what: str, timeout: float | None) -> None:
        super().__init__(what)
        self.what = what
        self.timeout = timeout


async def bounded(
    awaitable: Awaitable[Any], deadline: float, what: str, timeout: float | None
) -> Any:
    """Await `awaitable` until `deadline` at most (then cancel it: ComputeTimeout).
    A TimeoutError of compute's own passes through unchanged; an answer that
    comes after the cancellation (an awaitable that swallowed it) is dropped:
    ComputeTimeout all the same."""
    remaining = seconds_left(deadline)
    if sys.version_info >= (3, 11):
        scope = asyncio.timeout(remaining)
        try:
            async with scope:
                result = await awaitable
        except TimeoutError:
            if scope.expired():
                raise ComputeTimeout(what, timeout) from None
            raise
        if scope.expired():  # cancelled at the deadline, answered anyway
            raise ComputeTimeout(what, timeout)
        return result
    else:  # pragma: no cover - Python < 3.11
        try:
            result = await asyncio.wait_for(awaitable, remaining)
        except asyncio.TimeoutError:
            if time.monotonic() >= deadline:
                raise ComputeTimeout(what, timeout) from None
            raise
        if time.monotonic() >= deadline:
            raise ComputeTimeout(what, timeout)
        return result


def waiter_copy(error: BaseException) -> BaseException:
    """A fresh exception of the same type as `error` for one waiter (its own
    traceback, ``__cause__`` set by the raise); `error` itself when it cannot be
    copied (an exception class whose constructor rejects its own args)."""
    new: BaseException | None = None
    try:
        new = copy.copy(error)
    except Exception:
        try:
            new = type(error).__new__(type(error), *error.args)
            new.__dict__.update(getattr(error, "__dict__", {}))
        except Exception:
            new = None
    if new is None or new is error or type(new) is not type(error):
        return error
    new.__traceback__ = None
    new.__context__ = None
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        new.__notes__ = list(notes)
    return new


def reentry_error(key: object) -> CallContextError:
    return CallContextError(
        f"get_or_compute was asked for {key!r} from inside the compute that is computing it; "
        "compute must not depend on its own keys (this would wait forever)"
    )


def cycle_error() -> CallContextError:
    return CallContextError(
        "get_or_compute would deadlock: computes of different callers wait for each "
        "other's keys; compute must not depend on keys that depend on it"
    )


def loop_error() -> CallContextError:
    return CallContextError(
        "get_or_compute would deadlock: the keys it waits for are being computed by an "
        "asyncio task of the event loop running in this thread, which cannot run while "
        "this thread waits; await EmbeddingCache.get_or_compute from that loop instead"
    )


def stack_error() -> CallContextError:
    return CallContextError(
        "get_or_compute would deadlock: the keys it waits for are being computed by a "
        "synchronous get_or_compute lower in this thread's stack, whose compute is "
        "running this call; compute must not depend on its own keys"
    )
