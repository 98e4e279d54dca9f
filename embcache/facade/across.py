"""EmbeddingCache.get_or_compute over a SharedEmbeddingCache (without a tier):
single flight across every process of the host, through the segment's own
``SharedEmbeddingCache.get_or_compute`` (its pending markers and futex waits),
which is the one implementation of cross-process single flight; this module
only runs it for a task without blocking the event loop.

    keys all live (``in``, which counts nothing)  -> get_many on the loop
    else -> a worker thread runs cache.get_or_compute(keys, in_thread):
        it claims the keys nobody computes (any process, any thread), calls
        in_thread(missing): a sync compute runs there, an awaitable one is run
        on the caller's loop (run_coroutine_threadsafe) while the thread waits;
        keys another process or thread computes are waited for in the thread
        (a futex), never on the loop.

A compute asking for keys its own call computes (re-entry) raises
CallContextError at once, as the in-process registry's does, instead of
waiting for itself: the keys being computed are a context variable of the
compute (set in the task running an async compute, or the worker thread).
What differs from the in-process registry: a compute's error reaches its own
caller only (a waiter, here or in another process, finds the key still
missing and computes it itself), and cancelling a caller or its timeout stops
nothing of its worker thread's call.

``timeout`` bounds the call as for the in-process registry: the caller raises
FlightTimeoutError when it is up (the worker thread finishes its call, storing
what it computed; an awaited compute is not cancelled); the segment also lets
a waiter take over a key its owner has held longer than `timeout`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Sequence
from contextvars import ContextVar
from typing import Any

from embcache._core import CacheKey, as_key_tuple
from embcache.core.checks import check_seconds
from embcache.errors import CallContextError
from embcache.flight.call import Compute, Matrix, check_compute
from embcache.flight.timeouts import ComputeTimeout, FlightTimeoutError, compute_timeout_error
from embcache.shared import SharedEmbeddingCache

__all__ = ["get_or_compute_across"]


_computing: ContextVar[frozenset[CacheKey]] = ContextVar(
    "embcache_across_computing", default=frozenset()
)
"""The keys the compute running in this context computes (re-entry detection)."""


async def _awaited(awaitable: Awaitable[Any], keys: frozenset[CacheKey]) -> Any:
    _computing.set(_computing.get() | keys)  # this task's own context
    return await awaitable


async def get_or_compute_across(
    cache: SharedEmbeddingCache,
    keys: Sequence[CacheKey],
    compute: Compute,
    timeout: float | None,
) -> Matrix:
    """``cache.get_or_compute(keys, compute, timeout=timeout)`` for a task of the
    running loop, `compute` sync or async (see the module docstring)."""
    if timeout is not None:
        timeout = check_seconds(timeout, "timeout")
    check_compute(compute, "compute")
    seq = as_key_tuple(keys, "get_or_compute")
    busy = _computing.get()
    if busy and not busy.isdisjoint(seq):
        raise CallContextError(
            "get_or_compute would wait on keys its own compute is computing (compute asked "
            "for them again)"
        )
    if all(key in cache for key in seq):  # every key live: no thread needed
        matrix, found = cache.get_many(seq)
        if found.all():
            return matrix
    loop = asyncio.get_running_loop()

    def in_thread(missing: list[CacheKey]) -> Any:
        ours = frozenset(missing)
        _computing.set(_computing.get() | ours)  # the worker thread's own context
        result = compute(missing)
        if type(result) is not list and inspect.isawaitable(result):
            result = asyncio.run_coroutine_threadsafe(_awaited(result, ours), loop).result()
        return result

    call = asyncio.ensure_future(
        asyncio.to_thread(cache.get_or_compute, seq, in_thread, timeout=timeout)
    )
    if timeout is not None:
        await asyncio.wait({call}, timeout=timeout)  # the call goes on past it, unwaited
        if not call.done():
            call.add_done_callback(_drop_outcome)
            raise FlightTimeoutError(
                f"get_or_compute: timed out after {timeout} s (the call goes on in its worker "
                "thread, waiting for or computing its keys; what it computes is stored)"
            )
    try:
        answer: Matrix = await call
    except ComputeTimeout as exc:  # a compute holding itself to the deadline (CachedEmbedder)
        raise compute_timeout_error(exc.what, exc.timeout) from None
    return answer


def _drop_outcome(call: asyncio.Future[Any]) -> None:
    """Read the outcome of a call its caller stopped waiting for (so asyncio logs
    no "exception was never retrieved")."""
    if not call.cancelled():
        call.exception()
