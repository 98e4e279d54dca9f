"""Single-flight loading behind ``get_or_compute``: one registry per cache.

Every SyncEmbeddingCache makes its ``Flights`` object itself, on its first
``get_or_compute`` (or ``cache.flights``), and passes it what it needs of the
core: the cache (held weakly: the registry never keeps it alive), the key and
PutBatch types and the key-sequence check. A SharedEmbeddingCache makes one
the same way (``flights``, with its SharedPutBatch type): the registry is then
this process's over the segment (embcache.core.protocol.CoreCache is what
both caches offer it). This package imports nothing of the
core at run time: it sits below it and works on the cache through its public
methods (get_many, get, put_batch, ``in``, dim). Every caller on the cache
shares its registry: threads in ``SyncEmbeddingCache.get_or_compute``, asyncio
tasks of any event loop in ``EmbeddingCache.get_or_compute``, and every
CachedEmbedder over the cache. A key missed by several of them at once is
computed once; the others wait for its rows::

    Flights (one per cache, one lock)
      registry   CacheKey -> (flight, row)       keys in flight, nothing else
      waiting    caller -> the flight it waits on (deadlock detection); a caller
                 is a thread id (blocking wait) or an asyncio task (awaiting)
      epoch      flights settled with rows so far (stale-lookup detection)

    Flight       owner (thread id or task), the owner's thread and loop (None for
                 a thread owner); settles once: rows (m, dim) float32, read-only
                 | error | abandoned; then calls its wakeups:
                   thread waiter  threading.Event.set
                   task waiter    a future of the waiter's own loop, resolved
                                  directly on that loop's thread, else through
                                  loop.call_soon_threadsafe

(The registry's state, claiming and settling are embcache.flight.claims's
``Claims``, the base of ``Flights``.)

Each operation is written once, as a generator (``_steps``, ``_steps_one``,
``_fly``) that claims, computes, stores, settles and assembles, and yields only
what depends on how it runs: a wait on another's flight, an awaitable (compute's
result, the read-through source's answer), the write-back. Two thin drivers
(embcache.flight.drive) run it: ``block`` for a thread, ``run`` for a task. The
entry points check their arguments, look the keys up, return an all-hit answer
directly and otherwise hand the steps to their driver::

    get_many(keys) -> hits, misses -> claim the distinct misses (under the lock):
        not in flight -> ours (one new flight)   in flight -> WAIT on its flight
    [read through(ours)] -> compute(the rest) [-> AWAIT] -> cache.put_batch(..)
        .take() -> .store() -> settle (rows) [-> write back the computed rows]
    assemble the (n, dim) matrix in input order (embcache.flight.call)

One key (``get_or_compute_one``, ``get_or_compute`` of one missed key, a
CachedEmbedder's one-text call) skips the planning: ``_claim_one`` (one registry
probe), then the batch path's ``_fly`` (whose one-key branch builds no Work) or
a WAIT, taking its row of the flight's rows. The read-through ``Source`` (the
facade's shared tier, asyncio only) is touched in ``_fly`` alone: the owner asks
it for its claimed keys before computing (``source.read``, within the deadline;
it keeps the rows it found in the cache, which ``Work.adopt`` takes as settled)
and writes what it computed once its flight has settled (``source.write``).

Invariants:
  * a key is in the registry only while its owner's call is between claiming it
    and settling its flight; settling removes the keys first, under the lock, so
    a settled flight is never found by a new caller;
  * an owner stores its rows before it settles, and settles its own flight
    before it waits on anyone else's; a caller whose lookup predates a settle
    (the epoch moved) reads its claimed keys again before computing them;
  * a wait that would never end is refused with CallContextError (a
    RuntimeError): a caller asking for keys its own compute is computing
    (re-entry), computes waiting on each other (a cycle, followed through owners
    and the threads running their loops), and a thread blocking on a flight
    whose owner needs that very thread (a task of the event loop it runs, or a
    call lower in its own stack). Code running inside a compute counts as that
    flight's owner wherever it runs (a worker thread, a task it started): the
    owner sets ``computing`` (a context variable, embcache.flight.wait) around
    its compute, and it is copied with the context;
  * the flights lock is never held while user code or the cache runs;
  * in a forked child, flights owned by threads that did not survive the fork
    are abandoned (their waiters claim the keys again) and the lock is new.

If compute raises an ``Exception``, the flight settles with that error and
nothing is stored: the owner raises it, and every waiter raises its own copy
(same type, ``__cause__`` the owner's exception), so no two callers share one
exception object and the owner's traceback is never extended by a waiter. A
``StopIteration`` out of compute is raised as ``RuntimeError("compute raised
StopIteration")`` from it (as PEP 479 does for generators): left alone it would
turn into a puzzling error of the generator, coroutine or future machinery.

``timeout`` (seconds > 0 and finite, or None: no limit; checked by
embcache.core.checks.check_seconds) bounds one call: a caller still waiting
for another's flight when it expires raises FlightTimeoutError (a TimeoutError)
and stops waiting, leaving that flight to its owner. An owner's own compute is
user code and is not interrupted, except that an asyncio owner's awaited
compute is cancelled when the time is up: its flight is then abandoned (below)
and the owner raises FlightTimeoutError. A compute may also hold itself to the
deadline and raise ComputeTimeout (CachedEmbedder's do, embcache.flight.deadline):
its flight is abandoned the same way, in a thread owner too. If the owner dies
of anything else (``CancelledError``, ``KeyboardInterrupt``), the flight is
*abandoned*: its keys leave the registry and the waiters claim them again (one
becomes the owner).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from embcache.core.checks import check_seconds, is_async_callable
from embcache.core.names import track
from embcache.errors import ArgumentTypeError, KeyTypeError
from embcache.flight.call import Compute, Matrix, Plan, Work, all_found, check_compute, store_one
from embcache.flight.claims import Claims
from embcache.flight.drive import AWAIT, WAIT, WRITE, Steps, block, run
from embcache.flight.timeouts import (
    ComputeTimeout,
    FlightTimeoutError,
    compute_timeout_error,
    deadline_after,
    stop_iteration_error,
)
from embcache.flight.wait import Flight, computing, outcome

if TYPE_CHECKING:  # the layers above: their types for the checker only
    from embcache._core import CacheKey
    from embcache.core.protocol import CoreCache, PutRows

__all__ = ["Compute", "FlightTimeoutError", "Flights", "Source", "flights_of"]


def _async_compute_error(what: str) -> ArgumentTypeError:
    return ArgumentTypeError(
        f"{what} is an async function; the synchronous get_or_compute cannot await "
        "it (use EmbeddingCache.get_or_compute)"
    )


def _cache_gone() -> ReferenceError:
    return ReferenceError("the cache of this single-flight registry no longer exists")


class Source(Protocol):
    """What a flight's owner reads through before computing and writes back to
    after: the facade gives one over its shared tier (embcache.tier.read)."""

    def read(
        self, keys: list[CacheKey], dim: int | None
    ) -> Awaitable[tuple[Matrix, npt.NDArray[np.bool_]]]:
        """``(matrix, found)`` for `keys` (distinct, checked); the found rows are
        already kept in the cache."""
        ...

    def write(self, keys: list[CacheKey], rows: Matrix) -> Awaitable[None]:
        """Write the computed `rows` of `keys` back."""
        ...


class Flights(Claims):
    """The single-flight registry of one cache (``cache.flights``); thread-safe.

    Made by the cache itself: ``Flights(cache, key_type, batch_type, as_keys)``
    with the core's CacheKey and PutBatch types and its key-sequence check
    (``as_keys(keys, name)`` -> a tuple of keys, or KeyTypeError).
    ``get_or_compute`` serves threads (it blocks), ``get_or_compute_async``
    asyncio tasks of any loop (it awaits); both share the same flights.
    """

    __slots__ = ("_cache", "_key_type", "_batch_type", "_as_keys", "_name")

    def __init__(
        self,
        cache: CoreCache,
        key_type: type[CacheKey],
        batch_type: type[PutRows],
        as_keys: Callable[[Any, str], tuple[CacheKey, ...]],
    ) -> None:
        super().__init__()
        self._cache = weakref.ref(cache)
        self._key_type = key_type
        self._batch_type = batch_type
        self._as_keys = as_keys
        self._name: str = cache.name
        track("flights", self)  # its waits are reported under its cache's name

    @property
    def name(self) -> str:
        """The name of the cache this registry serves (for monitoring)."""
        return self._name

    # -- entry points: check, look up, hand the steps to a driver -----------------------

    def get_or_compute(
        self,
        keys: Sequence[CacheKey],
        compute: Compute,
        *,
        what: str = "compute",
        timeout: float | None = None,
    ) -> Matrix:
        """The (len(keys), dim) float32 matrix for `keys` of this registry's
        cache, in input order; blocks the calling thread.

        Looks all keys up with one ``cache.get_many``, then calls
        ``compute(missing)`` once with the distinct missing keys that nobody is
        computing, in first-occurrence order. ``compute`` returns an (m, dim)
        array-like of real numbers, converted and validated whole by
        ``cache.put_batch`` before anything is stored (errors name `what`), or a
        list of taken PutBatch objects of the cache holding exactly those keys in
        order. Keys another caller is computing are waited for, for at most
        `timeout` seconds from the start of the call (None: no limit); our own
        compute is not interrupted.

        Raises KeyTypeError for a key that is not a CacheKey; ArgumentTypeError
        when `compute` is not callable or is (or returns) an awaitable;
        InvalidVectorError / DimensionMismatchError (ValueError) when its result
        is not storable, in which case nothing is stored; CallContextError (a
        RuntimeError) when the wait would never end (compute asking for its own
        keys); RuntimeError when compute raised StopIteration (chained from it);
        FlightTimeoutError (a TimeoutError) when a wait outlasts `timeout`
        (ArgumentTypeError / ArgumentValueError for a `timeout` that is not a
        finite number > 0 or None); and whatever compute or the flight this call
        waited on raised (a waiter raises a copy of the owner's exception,
        chained from it). ``compute`` is called once more only if a caller
        computing keys this call waits for stops without an outcome (cancelled,
        KeyboardInterrupt).
        """
        timeout, cache, seq, epoch, matrix, found = self._look_up(
            keys, compute, what, timeout, blocking=True
        )
        if all_found(found):
            return matrix
        me = threading.get_ident()
        if len(seq) == 1:  # one missed key: no planning needed
            steps = self._steps_one(cache, seq[0], compute, what, epoch, me, me, None, None)
        else:
            steps = self._steps(cache, seq, matrix, found, compute, what, epoch, me, me, None, None)
        deadline = None if timeout is None else deadline_after(timeout)
        return block(steps, self._lock, self._waiting, me, what, deadline, timeout)

    async def get_or_compute_async(
        self,
        keys: Sequence[CacheKey],
        compute: Compute,
        *,
        what: str = "compute",
        timeout: float | None = None,
        source: Source | None = None,
    ) -> Matrix:
        """As get_or_compute, for a task of the running loop: waits are awaited,
        and ``compute`` may be sync or async (an awaitable result is awaited; a
        sync compute runs on the loop, so wrap blocking work in asyncio.to_thread).

        With a read-through `source` (a ``Source``: the facade's shared tier), the
        owner of a flight asks it for its claimed keys first (one call, within
        the deadline; what it has is kept in the cache), computes only the rest
        and writes the computed rows back once its flight has settled: waiters
        get the source's rows through the flight, so a key is fetched or
        computed once per cache.

        Cancelling a caller that waits for another's keys cancels nothing else.
        Cancelling the caller that is computing them removes its keys from flight;
        its waiters then claim them again (one of them computes), so no key stays
        stuck and no waiter sees a CancelledError that is not its own. With a
        `timeout`, an awaited compute still running when it expires is cancelled
        that way, and this call raises FlightTimeoutError.
        """
        timeout, cache, seq, epoch, matrix, found = self._look_up(
            keys, compute, what, timeout, blocking=False
        )
        if all_found(found):
            return matrix
        if len(seq) == 1:  # one missed key: no planning needed
            one = (cache, seq[0], compute, what, epoch)
            return await self._run(self._steps_one, one, source, what, timeout)
        many = (cache, seq, matrix, found, compute, what, epoch)
        return await self._run(self._steps, many, source, what, timeout)

    def _look_up(
        self, keys: Sequence[CacheKey], compute: Compute, what: str, timeout: object, blocking: bool
    ) -> tuple[float | None, CoreCache, tuple[CacheKey, ...], int, Matrix, npt.NDArray[np.bool_]]:
        """What every batch entry point starts with, before anything is counted:
        the arguments checked (a `blocking` call refuses an async compute), then
        one ``cache.get_many`` of the keys; ``(timeout, cache, keys as a tuple,
        the epoch read before the lookup, matrix, found)``."""
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
        check_compute(compute, what)
        if blocking and is_async_callable(compute):
            raise _async_compute_error(what)
        cache = self._cache()
        if cache is None:
            raise _cache_gone()
        seq = self._as_keys(keys, "get_or_compute")
        epoch = self._epoch
        matrix, found = cache.get_many(seq)
        return timeout, cache, seq, epoch, matrix, found

    def get_or_compute_one(
        self,
        key: CacheKey,
        compute: Compute,
        *,
        what: str = "compute",
        timeout: float | None = None,
        missed_at: int | None = None,
    ) -> Matrix:
        """``get_or_compute([key], compute)`` for one key, without the planning a
        batch needs: the (1, dim) float32 row of `key`, a new array.

        With ``missed_at`` (the ``epoch`` read before the caller's own
        ``cache.get(key)``, which missed), the key is not looked up again.
        The same guarantees and errors as get_or_compute: concurrent callers of
        `key` (threads here, tasks in get_or_compute_one_async) call one compute;
        its error reaches every waiter (a copy each); an abandoned flight is
        claimed again; `timeout` bounds the wait.
        """
        timeout, cache, missed_at, row = self._look_up_one(
            key, compute, what, timeout, missed_at, blocking=True
        )
        if row is not None:
            return row
        me = threading.get_ident()
        steps = self._steps_one(cache, key, compute, what, missed_at, me, me, None, None)
        deadline = None if timeout is None else deadline_after(timeout)
        return block(steps, self._lock, self._waiting, me, what, deadline, timeout)

    async def get_or_compute_one_async(
        self,
        key: CacheKey,
        compute: Compute,
        *,
        what: str = "compute",
        timeout: float | None = None,
        source: Source | None = None,
        missed_at: int | None = None,
    ) -> Matrix:
        """get_or_compute_one for a task of the running loop, as
        get_or_compute_async is get_or_compute's (`compute` sync or async; the
        read-through `source` asked before computing)."""
        timeout, cache, missed_at, row = self._look_up_one(
            key, compute, what, timeout, missed_at, blocking=False
        )
        if row is not None:
            return row
        one = (cache, key, compute, what, missed_at)
        return await self._run(self._steps_one, one, source, what, timeout)

    def _look_up_one(
        self,
        key: object,
        compute: Compute,
        what: str,
        timeout: float | None,
        missed_at: int | None,
        blocking: bool,
    ) -> tuple[float | None, CoreCache, int, Matrix | None]:
        """What both one-key entry points start with, before anything is counted:
        the arguments checked (a `blocking` call refuses an async compute), then
        the key looked up unless the caller's own lookup missed (`missed_at`);
        ``(timeout, cache, the epoch before the lookup, its (1, dim) row or
        None)``."""
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
        check_compute(compute, what)
        if type(key) is not self._key_type:
            raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        if blocking and is_async_callable(compute):
            raise _async_compute_error(what)
        cache = self._cache()
        if cache is None:
            raise _cache_gone()
        if missed_at is not None:
            return timeout, cache, missed_at, None
        epoch = self._epoch
        row = cache.get(key)
        return timeout, cache, epoch, None if row is None else row[None]

    async def _run(
        self,
        make: Callable[..., Steps],
        args: tuple[Any, ...],
        source: Source | None,
        what: str,
        timeout: float | None,
    ) -> Matrix:
        """The asyncio driver for the steps ``make(*args, me, thread, loop, source)``
        of this task. (No closure: cells would cost every call, hits included.)"""
        deadline = None if timeout is None else deadline_after(timeout)
        loop = asyncio.get_running_loop()
        me: Hashable = asyncio.current_task() or object()
        thread = threading.get_ident()
        steps = make(*args, me, thread, loop, source)
        return await run(
            steps, self._lock, self._waiting, me, thread, loop, what, deadline, timeout
        )

    # -- the steps of one call (one implementation; see the module docstring) -----------

    def _steps(
        self,
        cache: CoreCache,
        seq: tuple[CacheKey, ...],
        matrix: Matrix,
        found: npt.NDArray[np.bool_],
        compute: Compute,
        what: str,
        epoch: int,
        me: Hashable,
        thread: int,
        loop: asyncio.AbstractEventLoop | None,
        source: Source | None,
    ) -> Steps:
        """A call of several keys whose lookup (`matrix`, `found`, after `epoch`)
        missed some: claim the distinct misses, fly ours, wait for the others',
        assemble. (One missed key takes _steps_one instead.)"""
        plan = Plan(matrix, found, seq)
        pending = list(range(len(plan.misses)))
        retry = False
        while pending:
            flight, ours, waits, stale = self._claim(plan, pending, me, thread, loop, epoch)
            if flight is not None:
                keys = [plan.misses[j] for j in ours]
                rows = yield from self._fly(
                    cache, plan.hit_dim, flight, keys, compute, stale or retry, what, source
                )
                plan.settled(ours, rows)
            pending = []
            for other, items in waits.items():
                yield WAIT, other
                self._collect(plan, other, items, pending)
            retry = True  # someone may have stored the abandoned keys since
        return plan.assemble()

    def _steps_one(
        self,
        cache: CoreCache,
        key: CacheKey,
        compute: Compute,
        what: str,
        epoch: int,
        me: Hashable,
        thread: int,
        loop: asyncio.AbstractEventLoop | None,
        source: Source | None,
    ) -> Steps:
        """The row of one missed key (looked up after `epoch`), a new array:
        flown by us or waited for."""
        retry = False
        while True:
            flight, r, ours = self._claim_one(key, me, thread, loop)
            if ours:
                stale = retry or self._epoch != epoch
                rows = yield from self._fly(
                    cache, None, flight, [key], compute, stale, what, source
                )
                return rows.copy()
            yield WAIT, flight
            got = outcome(flight)
            if got is not None:
                return got[r : r + 1].copy()
            retry = True  # abandoned: claim it again (someone may have stored it since)

    def _fly(
        self,
        cache: CoreCache,
        hit_dim: int | None,
        flight: Flight,
        keys: list[CacheKey],
        compute: Compute,
        stale: bool,
        what: str,
        source: Source | None,
    ) -> Steps:
        """Compute, validate and store our claimed `keys`, then settle our flight;
        its rows (read-only, shared with its waiters). An awaitable result of
        compute is an AWAIT step. With a read-through `source`, the keys it has are
        taken from it instead of computed, and computed rows are written back to
        it after the flight settles (the only two places the source is touched)."""
        work = None
        token = computing.set((*computing.get(), flight))  # compute runs as our flight
        try:
            if source is None and len(keys) == 1 and not stale:  # one key: no Work needed
                result = compute([keys[0]])
                if type(result) is not list and inspect.isawaitable(result):
                    result = yield AWAIT, result
                rows = store_one(cache, self._batch_type, keys[0], hit_dim, result, what)
            else:
                work = Work(cache, self._batch_type, hit_dim, keys, stale)
                if source is not None and work.todo:  # read through the shared tier
                    matrix, found = yield AWAIT, source.read(work.todo, work.dim or cache.dim)
                    work.adopt(matrix, found)
                result = None
                if work.todo:
                    result = compute(list(work.todo))
                    if type(result) is not list and inspect.isawaitable(result):
                        result = yield AWAIT, result
                rows = work.finish(result, what)
        except StopIteration as exc:
            error = stop_iteration_error(what, exc)
            self._settle(flight, keys, error=error)
            raise error from exc
        except ComputeTimeout as exc:  # past the deadline: abandon the flight, like a cancel
            self._settle(flight, keys)
            raise compute_timeout_error(exc.what, exc.timeout) from None
        except Exception as exc:
            self._settle(flight, keys, error=exc)
            raise
        except BaseException:
            self._settle(flight, keys)
            raise
        finally:
            computing.reset(token)
        self._settle(flight, keys, rows=rows)
        if source is not None and work is not None and work.computed is not None:
            yield WRITE, source.write(work.computed_keys, work.computed)  # write back
        return rows


def flights_of(cache: CoreCache) -> Flights:
    """The single-flight registry of `cache` (made on first use, by the cache)."""
    flights: Flights = cache.flights
    return flights
