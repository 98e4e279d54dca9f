"""Single-flight loading behind ``get_or_compute``: one registry per cache.

Every SyncEmbeddingCache gets one ``Flights`` object (``cache.flights``, made by
the factory this module registers with the core at import). Every caller on that
cache shares it: threads in ``SyncEmbeddingCache.get_or_compute``, asyncio tasks
of any event loop in ``EmbeddingCache.get_or_compute``, and every CachedEmbedder
over the cache. A key missed by several of them at once is computed once; the
others wait for its rows::

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

One call, from the caller's side (embcache.flight.call holds the bookkeeping)::

    get_many(keys) -> hits, misses -> claim the distinct misses (under the lock):
        not in flight -> ours (one new flight)   in flight -> wait on its flight
    compute(ours) -> cache.put_batch(ours, result).take() -> .store() -> settle (rows)
    wait on the others' flights -> assemble the (n, dim) matrix in input order

One key (``get_or_compute_one``; ``get_or_compute`` of one missed key; a
CachedEmbedder's one-text call) skips the planning: claim it or find its flight
(one registry probe), compute([key]) -> store -> settle, or wait and take its row
of the flight's rows; no arrays are built beyond the row returned. The same
invariants hold: it claims under the same lock with the same re-entry check (its
own few lines), and computes, settles and waits through the batch path's code
(_fly / _fly_async, and embcache.flight.wait).

Invariants:
  * a key is in the registry only while its owner's call is between claiming it
    and settling its flight; settling removes the keys first, under the lock, so
    a settled flight is never found by a new caller;
  * an owner stores its rows before it settles, and settles its own flight
    before it waits on anyone else's; a caller whose lookup predates a settle
    (the epoch moved) reads its claimed keys again before computing them;
  * a wait that would never end is refused with RuntimeError: a caller asking
    for keys its own compute is computing (re-entry), computes waiting on each
    other (a cycle, followed through owners and the threads running their
    loops), and a thread blocking on a flight whose owner needs that very thread
    (a task of the event loop it runs, or a call lower in its own stack). Code
    running inside a compute counts as that flight's owner wherever it runs (a
    worker thread, a task it started): the owner sets ``computing`` (a context
    variable, embcache.flight.wait) around its compute, and it is copied with
    the context;
  * the flights lock is never held while user code or the cache runs.

If compute raises an ``Exception``, the flight settles with that error and
nothing is stored: the owner raises it, and every waiter raises its own copy
(same type, ``__cause__`` the owner's exception), so no two callers share one
exception object and the owner's traceback is never extended by a waiter. A
``StopIteration`` out of compute is raised as ``RuntimeError("compute raised
StopIteration")`` from it (as PEP 479 does for generators): left alone it would
turn into a puzzling error of the coroutine or future machinery.

``timeout`` (seconds, or None: no limit) bounds one call: a caller still waiting
for another's flight when it expires raises FlightTimeoutError (a TimeoutError)
and stops waiting, leaving that flight to its owner. An owner's own compute is
user code and is not interrupted, except that an asyncio owner's awaited
compute is cancelled when the time is up: its flight is then abandoned (below)
and the owner raises FlightTimeoutError. A compute may also hold itself to the
deadline and raise ComputeTimeout (CachedEmbedder's do, embcache.flight.deadline):
its flight is abandoned the same way, in a thread owner too. If the owner dies of anything else
(``CancelledError``, ``KeyboardInterrupt``), the flight is *abandoned*: its keys
leave the registry and the waiters claim them again (one becomes the owner).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import weakref
from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, SyncEmbeddingCache, as_key_tuple, set_flights_factory
from embcache.errors import ArgumentTypeError, KeyTypeError
from embcache.flight.call import (
    Compute,
    Matrix,
    Plan,
    Work,
    all_found,
    check_compute,
    is_async_function,
    store_one,
)
from embcache.flight.timeouts import (
    ComputeTimeout,
    FlightTimeoutError,
    bounded,
    check_timeout,
    compute_timeout_error,
    deadline_after,
    reentry_error,
    stop_iteration_error,
)
from embcache.flight.wait import Flight, block_on, computing, outcome, wait_for
from embcache.tier.protocol import Tier

__all__ = ["Compute", "FlightTimeoutError", "Flights", "Lookup", "flights_of"]

Lookup = tuple[int, Matrix, npt.NDArray[np.bool_]]
"""``(epoch, matrix, found)``: a caller's own ``cache.get_many(keys)`` of exactly
the keys it passes, with ``Flights.epoch`` as read before that lookup."""


def _awaitable_error(result: object, what: str) -> ArgumentTypeError:
    """What the synchronous get_or_compute raises for an awaitable `result` of
    compute (a coroutine is closed first: it is never awaited)."""
    if inspect.iscoroutine(result):
        result.close()
    return ArgumentTypeError(
        f"{what} returned an awaitable; the synchronous get_or_compute "
        "cannot await it (use EmbeddingCache.get_or_compute)"
    )


def _one_arguments(key: object, compute: Compute, what: str, timeout: float | None) -> float | None:
    """The checks of get_or_compute_one(_async)'s arguments; the timeout, checked."""
    if timeout is not None:
        timeout = check_timeout(timeout)
    check_compute(compute, what)
    if type(key) is not CacheKey:
        raise KeyTypeError(f"key must be a CacheKey, got {type(key).__name__}")
    return timeout


class Flights:
    """The single-flight registry of one cache (``cache.flights``); thread-safe.

    ``get_or_compute`` serves threads (it blocks), ``get_or_compute_async``
    asyncio tasks of any loop (it awaits); both share the same flights.
    """

    __slots__ = ("_lock", "_registry", "_waiting", "_epoch", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registry: dict[CacheKey, tuple[Flight, int]] = {}
        self._waiting: dict[Hashable, Flight] = {}
        self._epoch = 0

    def after_fork_in_child(self) -> None:
        """In a forked child: a fresh lock (another thread may have held this one
        at the fork), and every flight whose owner was another thread (which does
        not exist here) abandoned, so its keys are claimed and computed again
        instead of waited for forever. Flights of the forking thread go on."""
        self._lock = threading.Lock()
        me = threading.get_ident()
        orphans: dict[int, Flight] = {}
        for key, (flight, _) in list(self._registry.items()):
            if flight.thread != me:
                orphans[id(flight)] = flight
                del self._registry[key]
        self._waiting = {
            caller: flight
            for caller, flight in self._waiting.items()
            if not isinstance(caller, int) or caller == me
        }
        for flight in orphans.values():
            flight.done = True
            wakeups, flight.wakeups = flight.wakeups, []
            for wake in wakeups:
                wake()

    @property
    def epoch(self) -> int:
        """How many flights have settled with rows so far. A caller that looks its
        keys up itself reads this first and passes it with its lookup
        (``looked_up=``), so that a flight settling in between is noticed."""
        return self._epoch

    def in_flight(self) -> int:
        """How many keys are being computed right now (for tests and monitoring)."""
        with self._lock:
            return len(self._registry)

    def get_or_compute(
        self,
        cache: SyncEmbeddingCache,
        keys: Sequence[CacheKey],
        compute: Compute,
        *,
        what: str = "compute",
        timeout: float | None = None,
        looked_up: Lookup | None = None,
    ) -> Matrix:
        """The (len(keys), dim) float32 matrix for `keys` of `cache` (the cache this
        registry belongs to), in input order; blocks the calling thread.

        Looks all keys up with one ``cache.get_many``, then calls
        ``compute(missing)`` once with the distinct missing keys that nobody is
        computing, in first-occurrence order. ``compute`` returns an (m, dim)
        array-like of real numbers, converted and validated whole by
        ``cache.put_batch`` before anything is stored (errors name `what`), or a
        list of taken PutBatch objects of `cache` holding exactly those keys in
        order. Keys another caller is computing are waited for, for at most
        `timeout` seconds from the start of the call (None: no limit); our own
        compute is not interrupted. With ``looked_up`` (a ``Lookup``: the
        caller's own ``cache.get_many`` of exactly `keys` and the ``epoch`` read
        before it), that lookup is used instead of a second one, so the cache's
        statistics count each key once.

        Raises KeyTypeError for a key that is not a CacheKey; ArgumentTypeError
        when `compute` is not callable or is (or returns) an awaitable;
        InvalidVectorError / DimensionMismatchError (ValueError) when its result
        is not storable, in which case nothing is stored; RuntimeError when the
        wait would never end (compute asking for its own keys), or when compute
        raised StopIteration (chained from it); FlightTimeoutError (a
        TimeoutError) when a wait outlasts `timeout` (ArgumentTypeError /
        ArgumentValueError for a `timeout` that is not a number > 0 or None);
        and whatever compute or the flight this call waited on raised (a
        waiter raises a copy of the owner's exception, chained from it). ``compute`` is called
        once more only if a caller computing keys this call waits for stops
        without an outcome (cancelled, KeyboardInterrupt).
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        check_compute(compute, what)
        if is_async_function(compute):
            raise ArgumentTypeError(
                f"{what} is an async function; the synchronous get_or_compute cannot await "
                "it (use EmbeddingCache.get_or_compute)"
            )
        seq = as_key_tuple(keys, "get_or_compute")
        if looked_up is None:
            epoch = self._epoch
            matrix, found = cache.get_many(seq)
        else:
            epoch, matrix, found = looked_up
        if all_found(found):
            return matrix
        if len(seq) == 1:  # one missed key: no planning needed
            return self._one(cache, seq[0], compute, what, timeout, epoch)
        plan = Plan(matrix, found, seq)
        deadline = deadline_after(timeout)
        me = threading.get_ident()
        pending = list(range(len(plan.misses)))
        retry = False
        while pending:
            flight, ours, waits, stale = self._claim(plan, pending, me, me, None, epoch)
            if flight is not None:
                rows = self._fly(
                    cache,
                    plan.hit_dim,
                    flight,
                    [plan.misses[j] for j in ours],
                    compute,
                    stale or retry,
                    what,
                )
                plan.settled(ours, rows)
            pending = []
            for other, items in waits.items():
                block_on(self._lock, self._waiting, other, me, deadline, timeout)
                self._collect(plan, other, items, pending)
            retry = True  # someone may have stored the abandoned keys since
        return plan.assemble()

    async def get_or_compute_async(
        self,
        cache: SyncEmbeddingCache,
        keys: Sequence[CacheKey],
        compute: Compute,
        *,
        what: str = "compute",
        timeout: float | None = None,
        tier: Tier | None = None,
        looked_up: Lookup | None = None,
    ) -> Matrix:
        """As get_or_compute, for a task of the running loop: waits are awaited,
        and ``compute`` may be sync or async (an awaitable result is awaited; a
        sync compute runs on the loop, so wrap blocking work in asyncio.to_thread).

        With a shared `tier` (embcache.tier.protocol.Tier), the owner of a flight asks the
        tier for its claimed keys first (one call, within the deadline), keeps
        what it has in `cache`, computes only the rest and writes the computed
        rows to the tier once its flight has settled: waiters get the tier's
        rows through the flight, so a key is fetched or computed once per cache.

        Cancelling a caller that waits for another's keys cancels nothing else.
        Cancelling the caller that is computing them removes its keys from flight;
        its waiters then claim them again (one of them computes), so no key stays
        stuck and no waiter sees a CancelledError that is not its own. With a
        `timeout`, an awaited compute still running when it expires is cancelled
        that way, and this call raises FlightTimeoutError.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        check_compute(compute, what)
        seq = as_key_tuple(keys, "get_or_compute")
        if looked_up is None:
            epoch = self._epoch
            matrix, found = cache.get_many(seq)
        else:
            epoch, matrix, found = looked_up
        if all_found(found):
            return matrix
        if len(seq) == 1:  # one missed key: no planning needed
            return await self._one_async(cache, seq[0], compute, what, timeout, tier, epoch)
        plan = Plan(matrix, found, seq)
        deadline = deadline_after(timeout)
        loop = asyncio.get_running_loop()
        me: Hashable = asyncio.current_task() or object()
        thread = threading.get_ident()
        pending = list(range(len(plan.misses)))
        retry = False
        while pending:
            flight, ours, waits, stale = self._claim(plan, pending, me, thread, loop, epoch)
            if flight is not None:
                rows = await self._fly_async(
                    cache,
                    plan.hit_dim,
                    flight,
                    [plan.misses[j] for j in ours],
                    compute,
                    stale or retry,
                    what,
                    deadline,
                    timeout,
                    tier,
                )
                plan.settled(ours, rows)
            pending = []
            for other, items in waits.items():
                await wait_for(
                    self._lock, self._waiting, other, me, thread, loop, deadline, timeout
                )
                self._collect(plan, other, items, pending)
            retry = True
        return plan.assemble()

    # -- one key -----------------------------------------------------------------------

    def get_or_compute_one(
        self,
        cache: SyncEmbeddingCache,
        key: CacheKey,
        compute: Compute,
        *,
        what: str = "compute",
        timeout: float | None = None,
        missed_at: int | None = None,
    ) -> Matrix:
        """``get_or_compute(cache, [key], compute)`` for one key, without the
        planning a batch needs: the (1, dim) float32 row of `key`, a new array.

        With ``missed_at`` (the ``epoch`` read before the caller's own
        ``cache.get(key)``, which missed), the key is not looked up again.
        The same guarantees and errors as get_or_compute: concurrent callers of
        `key` (threads here, tasks in get_or_compute_one_async) call one compute;
        its error reaches every waiter (a copy each); an abandoned flight is
        claimed again; `timeout` bounds the wait.
        """
        timeout = _one_arguments(key, compute, what, timeout)
        if is_async_function(compute):
            raise ArgumentTypeError(
                f"{what} is an async function; the synchronous get_or_compute cannot await "
                "it (use EmbeddingCache.get_or_compute)"
            )
        if missed_at is None:
            missed_at = self._epoch
            row = cache.get(key)
            if row is not None:
                return row[None]
        return self._one(cache, key, compute, what, timeout, missed_at)

    async def get_or_compute_one_async(
        self,
        cache: SyncEmbeddingCache,
        key: CacheKey,
        compute: Compute,
        *,
        what: str = "compute",
        timeout: float | None = None,
        tier: Tier | None = None,
        missed_at: int | None = None,
    ) -> Matrix:
        """get_or_compute_one for a task of the running loop, as
        get_or_compute_async is get_or_compute's (`compute` sync or async; the
        shared `tier` asked before computing)."""
        timeout = _one_arguments(key, compute, what, timeout)
        if missed_at is None:
            missed_at = self._epoch
            row = cache.get(key)
            if row is not None:
                return row[None]
        return await self._one_async(cache, key, compute, what, timeout, tier, missed_at)

    def _claim_one(
        self,
        key: CacheKey,
        me: Hashable,
        thread: int,
        loop: asyncio.AbstractEventLoop | None,
    ) -> tuple[Flight, int, bool]:
        """Under the lock: `key` claimed as a new flight of ours, or the flight
        computing it and its row there; whether the flight is ours."""
        within = computing.get()
        with self._lock:
            registry = self._registry
            entry = registry.get(key)
            if entry is None:
                flight = Flight(me, thread, loop)
                registry[key] = (flight, 0)
                return flight, 0, True
            if entry[0].owner == me or entry[0] in within:
                raise reentry_error(key)
            return entry[0], entry[1], False

    def _one(
        self,
        cache: SyncEmbeddingCache,
        key: CacheKey,
        compute: Compute,
        what: str,
        timeout: float | None,
        epoch: int,
    ) -> Matrix:
        """The row of one missed key, computed by us or waited for (a thread).
        (The claim is _claim_one's, inline: this is a query's miss path.)"""
        deadline = None if timeout is None else deadline_after(timeout)
        me = threading.get_ident()
        registry = self._registry
        retry = False
        while True:
            with self._lock:
                entry = registry.get(key)
                if entry is None:
                    flight = Flight(me, me, None)
                    registry[key] = (flight, 0)
                else:
                    flight, r = entry
                    if flight.owner == me or flight in computing.get():
                        raise reentry_error(key)
            if entry is None:
                stale = retry or self._epoch != epoch
                return self._fly(cache, None, flight, [key], compute, stale, what).copy()
            block_on(self._lock, self._waiting, flight, me, deadline, timeout)
            rows = outcome(flight)
            if rows is not None:
                return rows[r : r + 1].copy()
            retry = True  # abandoned: claim it again (someone may have stored it since)

    async def _one_async(
        self,
        cache: SyncEmbeddingCache,
        key: CacheKey,
        compute: Compute,
        what: str,
        timeout: float | None,
        tier: Tier | None,
        epoch: int,
    ) -> Matrix:
        """_one for a task: waits are awaited, compute may be awaited."""
        deadline = deadline_after(timeout)
        loop = asyncio.get_running_loop()
        me: Hashable = asyncio.current_task() or object()
        thread = threading.get_ident()
        retry = False
        while True:
            flight, r, ours = self._claim_one(key, me, thread, loop)
            if ours:
                stale = retry or self._epoch != epoch
                ours_rows = await self._fly_async(
                    cache, None, flight, [key], compute, stale, what, deadline, timeout, tier
                )
                return ours_rows.copy()
            await wait_for(self._lock, self._waiting, flight, me, thread, loop, deadline, timeout)
            rows = outcome(flight)
            if rows is not None:
                return rows[r : r + 1].copy()
            retry = True

    # -- claiming and settling ---------------------------------------------------------

    def _claim(
        self,
        plan: Plan,
        pending: list[int],
        me: Hashable,
        thread: int,
        loop: asyncio.AbstractEventLoop | None,
        epoch: int,
    ) -> tuple[Flight | None, list[int], dict[Flight, list[tuple[int, int]]], bool]:
        """Under the lock: register the pending misses nobody computes as one flight
        of ours; group the others by the flight to wait on. Also tells whether a
        flight settled since `epoch` (our lookup may be stale)."""
        ours: list[int] = []
        waits: dict[Flight, list[tuple[int, int]]] = {}
        misses = plan.misses
        within = computing.get()
        with self._lock:
            registry = self._registry
            for j in pending:
                entry = registry.get(misses[j])
                if entry is None:
                    ours.append(j)
                    continue
                other, r = entry
                if other.owner == me or other in within:
                    raise reentry_error(misses[j])
                waits.setdefault(other, []).append((j, r))
            flight = None
            if ours:
                flight = Flight(me, thread, loop)
                for r, j in enumerate(ours):
                    registry[misses[j]] = (flight, r)
            return flight, ours, waits, self._epoch != epoch

    def _fly(
        self,
        cache: SyncEmbeddingCache,
        hit_dim: int | None,
        flight: Flight,
        keys: list[CacheKey],
        compute: Compute,
        stale: bool,
        what: str,
    ) -> Matrix:
        """Compute, validate and store our claimed `keys`, then settle our flight;
        its rows (read-only, shared with its waiters)."""
        token = computing.set((*computing.get(), flight))  # compute runs as our flight
        try:
            if len(keys) == 1 and not stale:  # one key: no Work needed
                result = compute([keys[0]])
                if type(result) is not list and inspect.isawaitable(result):
                    raise _awaitable_error(result, what)
                rows = store_one(cache, keys[0], hit_dim, result, what)
            else:
                work = Work(cache, hit_dim, keys, stale)
                result = None
                if work.todo:
                    result = compute(list(work.todo))
                    if type(result) is not list and inspect.isawaitable(result):
                        raise _awaitable_error(result, what)
                rows = work.finish(result, what)
        except StopIteration as exc:
            error = stop_iteration_error(what, exc)
            self._settle(flight, keys, error=error)
            raise error from exc
        except ComputeTimeout as exc:  # compute held itself to a deadline: as a cancel
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
        return rows

    async def _fly_async(
        self,
        cache: SyncEmbeddingCache,
        hit_dim: int | None,
        flight: Flight,
        keys: list[CacheKey],
        compute: Compute,
        stale: bool,
        what: str,
        deadline: float | None,
        timeout: float | None,
        tier: Tier | None = None,
    ) -> Matrix:
        """_fly for a task: an awaitable result of compute is awaited (cancelled
        if still running at `deadline`: the flight is abandoned). With a `tier`,
        the keys it has are taken from it instead of computed, and computed rows
        are written to it after the flight settles."""
        work = None
        token = computing.set((*computing.get(), flight))
        try:
            if tier is None and len(keys) == 1 and not stale:  # one key: no Work needed
                result = compute([keys[0]])
                if inspect.isawaitable(result):
                    result = await (
                        result if deadline is None else bounded(result, deadline, what, timeout)
                    )
                rows = store_one(cache, keys[0], hit_dim, result, what)
            else:
                work = Work(cache, hit_dim, keys, stale)
                if tier is not None and work.todo:
                    fetch = tier.fetch(work.todo, work.dim or cache.dim)
                    rows, index = await (
                        fetch if deadline is None else bounded(fetch, deadline, what, timeout)
                    )
                    work.adopt(rows, index)
                result = None
                if work.todo:
                    result = compute(list(work.todo))
                    if inspect.isawaitable(result):
                        result = await (
                            result if deadline is None else bounded(result, deadline, what, timeout)
                        )
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
        if tier is not None and work is not None and work.computed is not None:
            await tier.store(work.computed_keys, work.computed)
        return rows

    def _settle(
        self,
        flight: Flight,
        keys: list[CacheKey],
        rows: Matrix | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Take our keys out of flight and record the outcome (neither rows nor an
        error: abandoned), then wake the waiters."""
        with self._lock:
            for k in keys:
                del self._registry[k]
            flight.rows = rows
            flight.error = error
            flight.done = True
            if rows is not None:
                self._epoch += 1
            wakeups, flight.wakeups = flight.wakeups, []
        for wake in wakeups:
            wake()

    @staticmethod
    def _collect(
        plan: Plan, flight: Flight, items: list[tuple[int, int]], pending: list[int]
    ) -> None:
        """Take the rows of a settled flight; re-raise its error; queue its keys
        again if it was abandoned."""
        rows = outcome(flight)
        if rows is None:
            pending.extend(j for j, _ in items)
            return
        for j, r in items:
            plan.sources[j] = (rows, r)


_ALL_FLIGHTS: weakref.WeakSet[Flights] = weakref.WeakSet()


def _new_flights() -> Flights:
    flights = Flights()
    _ALL_FLIGHTS.add(flights)
    return flights


def _after_fork_in_child() -> None:
    for flights in list(_ALL_FLIGHTS):
        flights.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def flights_of(cache: SyncEmbeddingCache) -> Flights:
    """The single-flight registry of `cache`."""
    flights = cache.flights
    if not isinstance(flights, Flights):
        raise RuntimeError(
            "this SyncEmbeddingCache has no single-flight registry (it was made before "
            "embcache.flight.registry was imported)"
        )
    return flights


set_flights_factory(_new_flights)
