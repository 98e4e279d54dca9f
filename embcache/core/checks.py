"""The argument checks every layer shares, one rule each: seconds, counts, the
"not given" marker of load keywords, whether a callable is async, and a deadline
scope for awaits. Plain Python below everything else (the core imports it).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import numbers
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from embcache.errors import ArgumentTypeError, ArgumentValueError

__all__ = [
    "UNSET",
    "check_positive_int",
    "check_seconds",
    "deadline_scope",
    "is_async_callable",
]


class _Unset:
    """The type of UNSET."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""A ``load`` / ``open`` keyword that was not given: the snapshot's recorded
value is used."""


def check_seconds(value: object, name: str, *, allow_none: bool = True) -> float | None:
    """`value` as a float of seconds: a real number > 0 and finite, or None (no
    limit) when `allow_none`. ArgumentTypeError for a bool or a non-number;
    ArgumentValueError for NaN, infinity (None says "no limit") or a value <= 0."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        expected = "a number of seconds or None" if allow_none else "a number of seconds"
        raise ArgumentTypeError(f"{name} must be {expected}, got {type(value).__name__}")
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        hint = " (None: no limit)" if allow_none else ""
        raise ArgumentValueError(f"{name} must be a finite number > 0{hint}, got {value!r}")
    return seconds


def check_positive_int(value: object, name: str) -> int:
    """`value` as an int >= 1 (anything with ``__index__`` but a bool).
    ArgumentTypeError / ArgumentValueError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not hasattr(type(value), "__index__"):
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__}")
    number = int(value.__index__())  # type: ignore[attr-defined]
    if number < 1:
        raise ArgumentValueError(f"{name} must be >= 1, got {number}")
    return number


def is_async_callable(fn: object) -> bool:
    """True for an ``async def`` function or method, a partial of one, or an
    object whose ``__call__`` is one (what calling it returns is then always an
    awaitable). Functions and bound methods take the cheap test."""
    code = getattr(fn, "__code__", None)
    if code is not None:
        return bool(code.co_flags & inspect.CO_COROUTINE)
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the method, not callable()
    return inspect.iscoroutinefunction(call)


if sys.version_info >= (3, 11):

    def deadline_scope(seconds: float | None) -> asyncio.Timeout:
        """``async with deadline_scope(s):`` cancels its body after `s` seconds
        (None: never) and raises TimeoutError; ``.expired()`` tells whether it did."""
        return asyncio.timeout(seconds)

else:  # pragma: no cover - Python < 3.11

    class _Scope:
        def __init__(self) -> None:
            self.fired = False

        def expired(self) -> bool:
            return self.fired

    @asynccontextmanager
    async def _scope(seconds: float | None) -> AsyncIterator[_Scope]:
        scope = _Scope()
        if seconds is None:
            yield scope
            return
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def fire() -> None:
            scope.fired = True
            task.cancel()

        handle = loop.call_later(max(seconds, 0.0), fire)
        try:
            yield scope
        except asyncio.CancelledError:
            if scope.fired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()

    def deadline_scope(seconds: float | None) -> Any:
        """asyncio.timeout for Python < 3.11: cancels the body after `seconds`
        (None: never) and raises TimeoutError; ``.expired()`` tells whether it did."""
        return _scope(seconds)
