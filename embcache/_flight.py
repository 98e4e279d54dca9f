"""Single-flight loading behind ``get_or_compute``.

One ``ThreadFlights`` (threads) or ``AsyncFlights`` (asyncio tasks) per cache
remembers which keys are being computed right now, so that a key missed by
several callers at once is computed once and the others wait for its rows::

    registry   CacheKey -> (flight, row)      keys in flight, nothing else
    flight     owner (thread id / task) and, once settled, one outcome:
               rows (m, dim) float32 read-only | error | abandoned
    waiting    owner -> the flight it is blocked on (deadlock detection)

One call, from the caller's side::

    get_many(keys) -> hits, misses -> claim the distinct misses:
        not in flight -> ours (one new flight)   in flight -> wait on its flight
    compute(ours) -> validate -> put_many -> settle our flight (rows)
    wait on the others' flights -> assemble the (n, dim) matrix in input order

Invariants:
  * a key is in the registry only while its owner's call is between claiming it
    and settling its flight; settling removes the keys first (under the lock for
    threads), so a settled flight is never found by a new caller;
  * an owner settles its own flight before it waits on anyone else's, so a
    waiter never waits on a flight whose owner is blocked in a wait that is not
    part of a cycle through its own compute (cycles are detected and refused);
  * the flights lock is never held while user code or the cache runs.

If compute raises an ``Exception``, the flight settles with that error: every
waiter raises it and nothing is stored. If the owner dies of anything else
(``CancelledError``, ``KeyboardInterrupt``), the flight is *abandoned*: its keys
leave the registry and the waiters claim them again (one becomes the owner).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
import weakref
from collections.abc import Hashable, Sequence
from typing import Any, Callable, Protocol

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey
from embcache.errors import (
    DimensionMismatchError,
    InvalidVectorError,
    KeyTypeError,
    VectorTypeError,
)

__all__ = ["AsyncFlights", "Compute", "ThreadFlights"]

Matrix = npt.NDArray[np.float32]
Compute = Callable[[list[CacheKey]], Any]
"""``compute(missing_keys)`` -> an (m, dim) array-like, or an awaitable of one."""


class _BatchCache(Protocol):
    """What get_or_compute needs from a cache (SyncEmbeddingCache provides it)."""

    @property
    def dim(self) -> int | None: ...

    def get_many(self, keys: Sequence[CacheKey]) -> tuple[Matrix, npt.NDArray[np.bool_]]: ...

    def put_many(self, keys: Sequence[CacheKey], matrix: npt.ArrayLike) -> None: ...

    def __contains__(self, key: object) -> bool: ...


# --- one call's bookkeeping ---------------------------------------------------------


class _Plan:
    """The misses of one get_or_compute call and where each one's row comes from.

    ``misses`` are the distinct missed keys in first-occurrence order; input
    position ``miss_pos[i]`` takes the row of ``misses[miss_slot[i]]``.
    ``sources[j]`` is ``(rows, r)`` once row ``r`` of a settled flight's ``rows``
    holds ``misses[j]``.
    """

    __slots__ = ("matrix", "hit_dim", "misses", "miss_pos", "miss_slot", "sources")

    def __init__(self, matrix: Matrix, found: npt.NDArray[np.bool_], keys: tuple[CacheKey, ...]):
        self.matrix = matrix
        self.hit_dim: int | None = int(matrix.shape[1]) if found.any() else None
        miss_pos = np.flatnonzero(~found)
        slot_of: dict[CacheKey, int] = {}
        miss_slot = np.empty(len(miss_pos), dtype=np.intp)
        for i, pos in enumerate(miss_pos.tolist()):
            miss_slot[i] = slot_of.setdefault(keys[pos], len(slot_of))
        self.misses: list[CacheKey] = list(slot_of)
        self.miss_pos = miss_pos
        self.miss_slot = miss_slot
        self.sources: list[tuple[Matrix, int] | None] = [None] * len(self.misses)

    def assemble(self) -> Matrix:
        """The full (n, dim) matrix: hits as looked up, misses from their flights."""
        groups: dict[int, tuple[Matrix, list[int], list[int]]] = {}
        for j, source in enumerate(self.sources):
            assert source is not None, "every miss is settled before assembly"
            rows, r = source
            group = groups.setdefault(id(rows), (rows, [], []))
            group[1].append(j)
            group[2].append(r)
        dims = {int(rows.shape[1]) for rows, _, _ in groups.values()}
        if self.hit_dim is not None:
            dims.add(self.hit_dim)
        if len(dims) > 1:
            raise DimensionMismatchError(
                "get_or_compute: this batch mixes vectors of dimensions "
                f"{', '.join(map(str, sorted(dims)))} (computed concurrently by different calls)"
            )
        (dim,) = dims
        matrix = self.matrix
        if matrix.shape[1] != dim:  # every key missed and nothing fixed the dimension
            matrix = np.empty((matrix.shape[0], dim), dtype=np.float32)
        if len(groups) == 1:  # one flight holds every miss: gather straight from it
            ((rows, _, picks),) = groups.values()
            at = np.asarray(picks, dtype=np.intp)[self.miss_slot]
            if len(at) == len(rows) and (at == np.arange(len(at))).all():
                if len(at) == len(matrix):
                    np.copyto(matrix, rows)
                else:
                    matrix[self.miss_pos] = rows
            else:
                matrix[self.miss_pos] = rows[at]
            return matrix
        distinct = np.empty((len(self.misses), dim), dtype=np.float32)
        for rows, slots, picks in groups.values():
            distinct[slots] = rows[picks]
        matrix[self.miss_pos] = distinct[self.miss_slot]
        return matrix


def _key_tuple(keys: Sequence[CacheKey]) -> tuple[CacheKey, ...]:
    """`keys` as a tuple. The items are checked by the cache's get_many."""
    if isinstance(keys, CacheKey):
        raise KeyTypeError("get_or_compute takes a sequence of CacheKey, got a single CacheKey")
    if isinstance(keys, (str, bytes)):
        raise KeyTypeError(
            f"get_or_compute takes a sequence of CacheKey, got {type(keys).__name__}"
        )
    if type(keys) is tuple:
        return keys
    try:
        return tuple(keys)
    except TypeError:
        raise KeyTypeError(
            f"get_or_compute takes a sequence of CacheKey, got {type(keys).__name__}"
        ) from None


def _all_found(found: npt.NDArray[np.bool_]) -> bool:
    # a numpy reduction costs ~0.6 us; a short list is cheaper to scan in Python
    return all(found.tolist()) if len(found) <= 32 else bool(found.all())


def _is_async_function(fn: object) -> bool:
    code = getattr(fn, "__code__", None)  # functions and bound methods: the cheap test
    if code is not None:
        return bool(code.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(fn)


def _check_compute(compute: object) -> None:
    if not callable(compute):
        raise TypeError(
            "compute must be a callable taking a list of CacheKey, got " + type(compute).__name__
        )


def _merge_dim(a: int | None, b: int | None, what: str) -> int | None:
    if a is not None and b is not None and a != b:
        raise DimensionMismatchError(f"get_or_compute: {what} have dim {b}, the hits dim {a}")
    return a if a is not None else b


def _fetch_settled(
    cache: _BatchCache, ours: list[CacheKey], hit_dim: int | None
) -> tuple[dict[int, Matrix], list[CacheKey], int | None]:
    """For keys we claimed although another caller may have stored them after our
    lookup: read those now present. Returns (row of each present key by its index
    in `ours`, the keys left to compute, the dimension they must have).

    Only reached after such a race (or a retry); the second lookup counts its hits
    again in the cache's statistics."""
    present = [r for r, k in enumerate(ours) if k in cache]
    rows: dict[int, Matrix] = {}
    dim = hit_dim
    if present:
        matrix, found = cache.get_many([ours[r] for r in present])
        for r, (row, hit) in zip(present, zip(matrix, found.tolist())):
            if hit:
                rows[r] = row
        if rows:
            dim = _merge_dim(hit_dim, int(matrix.shape[1]), "entries stored meanwhile")
    todo = [k for r, k in enumerate(ours) if r not in rows]
    return rows, todo, dim


def _validate(result: Any, n_keys: int, expected_dim: int | None, fixed_dim: int | None) -> Matrix:
    """compute's result as a private, read-only, C-contiguous float32 (n_keys, dim)
    matrix, or the InvalidVectorError / VectorTypeError saying why not."""
    if isinstance(result, (str, bytes, bytearray)):
        raise VectorTypeError(
            f"compute must return an (m, dim) array of real numbers, got {type(result).__name__}"
        )
    try:
        arr = np.asarray(result)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(
            f"compute's result could not be read as an (m, dim) array: {exc}"
        ) from None
    if arr.dtype.kind not in "iuf":
        raise VectorTypeError(
            f"compute must return real numbers (integer or float dtype), got dtype {arr.dtype}"
        )
    if arr.ndim != 2 or arr.shape[0] != n_keys:
        raise InvalidVectorError(
            f"compute must return an array of shape ({n_keys}, dim) for {n_keys} missing keys, "
            f"got shape {arr.shape}"
        )
    dim = int(arr.shape[1])
    if dim == 0:
        raise InvalidVectorError(
            "compute returned empty rows; an embedding needs at least one value"
        )
    if fixed_dim is not None and dim != fixed_dim:
        raise DimensionMismatchError(
            f"compute returned dim {dim}, but this cache stores dim {fixed_dim}"
        )
    if expected_dim is not None and dim != expected_dim:
        raise DimensionMismatchError(
            f"compute returned dim {dim}, but the hits in this batch have dim {expected_dim}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        rows = np.array(arr, dtype=np.float32, order="C", copy=True)  # overflow -> inf
        # NaN propagates through min/max and infinities are extremes: two passes
        # without a temporary array answer "all finite?"
        finite = math.isfinite(rows.min()) and math.isfinite(rows.max())
    if not finite:
        bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
        raise InvalidVectorError(
            f"compute returned a NaN, an infinity or a value beyond float32 range in row {bad}"
        )
    rows.flags.writeable = False
    return rows


class _Work:
    """What one flight's owner does around its compute call, shared by the thread
    and asyncio registries (only the call itself differs: awaited or not)."""

    __slots__ = ("cache", "keys", "present", "todo", "dim")

    def __init__(self, cache: _BatchCache, plan: _Plan, keys: list[CacheKey], stale: bool):
        self.cache = cache
        self.keys = keys
        self.present: dict[int, Matrix] = {}
        self.todo: list[CacheKey] = keys
        self.dim = plan.hit_dim
        if stale:  # another caller may have stored some of our keys meanwhile
            self.present, self.todo, self.dim = _fetch_settled(cache, keys, self.dim)

    def finish(self, result: Any) -> Matrix:
        """Validate and store compute's `result` for `todo`; our flight's rows."""
        computed = None
        if self.todo:
            computed = _validate(result, len(self.todo), self.dim, self.cache.dim)
            self.cache.put_many(self.todo, computed)
        return _own_rows(len(self.keys), self.present, computed)


def _own_rows(n_ours: int, present: dict[int, Matrix], computed: Matrix | None) -> Matrix:
    """The rows of our flight, in claim order: stored-meanwhile rows and computed ones."""
    if not present and computed is not None:
        return computed
    dim = next(iter(present.values())).shape[0] if present else 0
    rows = np.empty((n_ours, dim), dtype=np.float32)
    if present:
        rows[list(present)] = np.stack(list(present.values()))
    if computed is not None:
        rows[[r for r in range(n_ours) if r not in present]] = computed
    rows.flags.writeable = False
    return rows


def _reentry_error(key: CacheKey) -> RuntimeError:
    return RuntimeError(
        f"get_or_compute was asked for {key!r} from inside the compute that is computing it; "
        "compute must not depend on its own keys (this would wait forever)"
    )


def _cycle_error() -> RuntimeError:
    return RuntimeError(
        "get_or_compute would deadlock: computes of different callers wait for each "
        "other's keys; compute must not depend on keys that depend on it"
    )


_ABANDONED = object()
"""Outcome of a flight whose owner stopped without a result or an error."""


# --- threads ------------------------------------------------------------------------


class _ThreadFlight:
    """The keys one thread is computing; settled once, under the flights lock."""

    __slots__ = ("owner", "settled", "rows", "error", "abandoned")

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.settled = threading.Event()
        self.rows: Matrix | None = None
        self.error: BaseException | None = None
        self.abandoned = False


class ThreadFlights:
    """Single-flight ``get_or_compute`` for threads (one per SyncEmbeddingCache).

    Thread-safe. A key that another thread is computing is waited for rather than
    computed again; ``compute`` must be synchronous.
    """

    __slots__ = ("_lock", "_registry", "_waiting", "_epoch", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registry: dict[CacheKey, tuple[_ThreadFlight, int]] = {}
        self._waiting: dict[int, _ThreadFlight] = {}
        # flights settled with rows so far: a change between a caller's lookup and
        # its claim means rows it missed may have been stored meanwhile
        self._epoch = 0

    def in_flight(self) -> int:
        """How many keys are being computed right now (for tests and monitoring)."""
        with self._lock:
            return len(self._registry)

    def get_or_compute(
        self, cache: _BatchCache, keys: Sequence[CacheKey], compute: Compute
    ) -> Matrix:
        """The (len(keys), dim) float32 matrix for `keys`, in input order.

        Looks all keys up with one ``cache.get_many``, then calls
        ``compute(missing)`` once with the distinct missing keys that no other
        thread is computing, in first-occurrence order; ``compute`` returns an
        (m, dim) array-like of real numbers, which is validated whole and stored
        with ``cache.put_many``. Keys another thread is computing are waited for.

        Raises KeyTypeError for a key that is not a CacheKey; TypeError when
        `compute` is not callable or returns an awaitable (use
        EmbeddingCache.get_or_compute for async compute); InvalidVectorError /
        DimensionMismatchError (ValueError) when its result has the wrong shape,
        dimension or non-finite values, in which case nothing is stored;
        RuntimeError when compute asks for its own keys (it would never finish);
        and whatever compute or the flight this call waited on raised.
        ``compute`` is called once more only if a thread computing keys this call
        waits for stops without an outcome (KeyboardInterrupt, SystemExit).
        """
        _check_compute(compute)
        if _is_async_function(compute):
            raise TypeError(
                "compute is an async function; the synchronous get_or_compute cannot await "
                "it (use EmbeddingCache.get_or_compute)"
            )
        seq = _key_tuple(keys)
        epoch = self._epoch
        matrix, found = cache.get_many(seq)
        if _all_found(found):
            return matrix
        plan = _Plan(matrix, found, seq)
        me = threading.get_ident()
        pending = list(range(len(plan.misses)))
        stale_possible = False
        while pending:
            flight, ours, waits, stale = self._claim(plan, pending, me, epoch)
            if flight is not None:
                self._fly(cache, plan, flight, ours, compute, stale or stale_possible)
            pending = []
            for other, items in waits.items():
                self._wait(other, me)
                if other.error is not None:
                    raise other.error
                if other.abandoned:
                    pending.extend(j for j, _ in items)
                    continue
                assert other.rows is not None
                for j, r in items:
                    plan.sources[j] = (other.rows, r)
            stale_possible = True  # a retry: someone may have stored them since
        return plan.assemble()

    def _claim(
        self, plan: _Plan, pending: list[int], me: int, epoch: int
    ) -> tuple[_ThreadFlight | None, list[int], dict[_ThreadFlight, list[tuple[int, int]]], bool]:
        """Under the lock: register the pending misses nobody computes as one flight
        of ours; group the others by the flight to wait on."""
        ours: list[int] = []
        waits: dict[_ThreadFlight, list[tuple[int, int]]] = {}
        misses = plan.misses
        with self._lock:
            registry = self._registry
            for j in pending:
                entry = registry.get(misses[j])
                if entry is None:
                    ours.append(j)
                    continue
                other, r = entry
                if other.owner == me:
                    raise _reentry_error(misses[j])
                waits.setdefault(other, []).append((j, r))
            flight = None
            if ours:
                flight = _ThreadFlight(me)
                for r, j in enumerate(ours):
                    registry[misses[j]] = (flight, r)
            return flight, ours, waits, self._epoch != epoch

    def _fly(
        self,
        cache: _BatchCache,
        plan: _Plan,
        flight: _ThreadFlight,
        ours: list[int],
        compute: Compute,
        stale: bool,
    ) -> None:
        """Compute, validate and store our claimed keys, then settle our flight."""
        keys = [plan.misses[j] for j in ours]
        try:
            work = _Work(cache, plan, keys, stale)
            result = None
            if work.todo:
                result = compute(list(work.todo))
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()  # never awaited: close it quietly
                    raise TypeError(
                        "compute returned an awaitable; the synchronous get_or_compute "
                        "cannot await it (use EmbeddingCache.get_or_compute)"
                    )
            rows = work.finish(result)
        except Exception as exc:
            self._settle(flight, keys, error=exc)
            raise
        except BaseException:
            self._settle(flight, keys, abandoned=True)
            raise
        self._settle(flight, keys, rows=rows)
        for r, j in enumerate(ours):
            plan.sources[j] = (rows, r)

    def _settle(
        self,
        flight: _ThreadFlight,
        keys: list[CacheKey],
        rows: Matrix | None = None,
        error: BaseException | None = None,
        abandoned: bool = False,
    ) -> None:
        with self._lock:
            for k in keys:
                del self._registry[k]
            flight.rows = rows
            flight.error = error
            flight.abandoned = abandoned
            if rows is not None:
                self._epoch += 1
            flight.settled.set()

    def _wait(self, flight: _ThreadFlight, me: int) -> None:
        """Block until `flight` settles; RuntimeError instead if that would deadlock."""
        with self._lock:
            # follow owner -> flight it waits on; every wait is checked as it
            # starts, so no cycle can form that does not pass through `me`
            link: _ThreadFlight | None = flight
            for _ in range(len(self._waiting) + 1):
                if link is None or link.settled.is_set():
                    break
                if link.owner == me:
                    raise _cycle_error()
                link = self._waiting.get(link.owner)
            self._waiting[me] = flight
        try:
            flight.settled.wait()
        finally:
            with self._lock:
                del self._waiting[me]


# --- asyncio ------------------------------------------------------------------------


class _AsyncFlight:
    """The keys one task is computing. `future` ends with rows, _ABANDONED, or an error."""

    __slots__ = ("owner", "future")

    def __init__(self, owner: Hashable, future: asyncio.Future[Any]) -> None:
        self.owner = owner
        self.future = future


class _LoopFlights:
    """Flights of one event loop (futures belong to a loop)."""

    __slots__ = ("registry", "waiting")

    def __init__(self) -> None:
        self.registry: dict[CacheKey, tuple[_AsyncFlight, int]] = {}
        self.waiting: dict[Hashable, _AsyncFlight] = {}


class AsyncFlights:
    """Single-flight ``get_or_compute`` for asyncio tasks (one per EmbeddingCache).

    A key another task is computing is awaited rather than computed again.
    Flights are kept per event loop, so one cache can serve several loops (in
    several threads); single flight then holds within each loop.
    """

    __slots__ = ("_lock", "_loops", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopFlights] = (
            weakref.WeakKeyDictionary()
        )

    def _state(self) -> _LoopFlights:
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._loops.get(loop)
            if state is None:
                state = self._loops[loop] = _LoopFlights()
            return state

    def in_flight(self) -> int:
        """How many keys are being computed right now on the running loop."""
        return len(self._state().registry)

    async def get_or_compute(
        self, cache: _BatchCache, keys: Sequence[CacheKey], compute: Compute
    ) -> Matrix:
        """The (len(keys), dim) float32 matrix for `keys`, in input order.

        As ThreadFlights.get_or_compute, for tasks of the running loop, and
        ``compute`` may be sync or async (an awaitable result is awaited; a sync
        compute runs on the loop, so wrap blocking work in asyncio.to_thread).

        Cancelling a caller that waits for another's keys cancels nothing else.
        Cancelling the caller that is computing them removes its keys from flight;
        its waiters then claim them again (one of them computes), so no key stays
        stuck and no waiter sees a CancelledError that is not its own.
        """
        _check_compute(compute)
        seq = _key_tuple(keys)
        # lookup and claim run without a suspension point in between, so no flight
        # of this loop can settle in between
        matrix, found = cache.get_many(seq)
        if _all_found(found):
            return matrix
        plan = _Plan(matrix, found, seq)
        state = self._state()
        me: Hashable = asyncio.current_task() or object()
        pending = list(range(len(plan.misses)))
        stale = False
        while pending:
            flight, ours, waits = self._claim(state, plan, pending, me)
            if flight is not None:
                await self._fly(state, cache, plan, flight, ours, compute, stale)
            pending = []
            for other, items in waits.items():
                outcome = await self._wait(state, other, me)
                if outcome is _ABANDONED:
                    pending.extend(j for j, _ in items)
                    continue
                for j, r in items:
                    plan.sources[j] = (outcome, r)
            stale = True  # a retry: another waiter may have stored them since
        return plan.assemble()

    def _claim(
        self, state: _LoopFlights, plan: _Plan, pending: list[int], me: Hashable
    ) -> tuple[_AsyncFlight | None, list[int], dict[_AsyncFlight, list[tuple[int, int]]]]:
        ours: list[int] = []
        waits: dict[_AsyncFlight, list[tuple[int, int]]] = {}
        registry = state.registry
        for j in pending:
            entry = registry.get(plan.misses[j])
            if entry is None:
                ours.append(j)
                continue
            other, r = entry
            if other.owner is me:
                raise _reentry_error(plan.misses[j])
            waits.setdefault(other, []).append((j, r))
        flight = None
        if ours:
            flight = _AsyncFlight(me, asyncio.get_running_loop().create_future())
            for r, j in enumerate(ours):
                registry[plan.misses[j]] = (flight, r)
        return flight, ours, waits

    async def _fly(
        self,
        state: _LoopFlights,
        cache: _BatchCache,
        plan: _Plan,
        flight: _AsyncFlight,
        ours: list[int],
        compute: Compute,
        stale: bool,
    ) -> None:
        keys = [plan.misses[j] for j in ours]
        try:
            work = _Work(cache, plan, keys, stale)
            result = None
            if work.todo:
                result = compute(list(work.todo))
                if inspect.isawaitable(result):
                    result = await result
            rows = work.finish(result)
        except Exception as exc:
            self._settle(state, flight, keys, exc)
            raise
        except BaseException:
            self._settle(state, flight, keys, _ABANDONED)
            raise
        self._settle(state, flight, keys, rows)
        for r, j in enumerate(ours):
            plan.sources[j] = (rows, r)

    @staticmethod
    def _settle(
        state: _LoopFlights, flight: _AsyncFlight, keys: list[CacheKey], outcome: Any
    ) -> None:
        for k in keys:
            del state.registry[k]
        future = flight.future
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
            future.exception()  # retrieved: waiters re-raise it, nobody need log it
        else:
            future.set_result(outcome)

    @staticmethod
    async def _wait(state: _LoopFlights, flight: _AsyncFlight, me: Hashable) -> Any:
        """The outcome of `flight` (rows or _ABANDONED), or its error raised.
        Cancelling this wait leaves the flight alone (it is shielded)."""
        if not flight.future.done():
            link: _AsyncFlight | None = flight
            for _ in range(len(state.waiting) + 1):
                if link is None or link.future.done():
                    break
                if link.owner is me:
                    raise _cycle_error()
                link = state.waiting.get(link.owner)
            state.waiting[me] = flight
            try:
                await asyncio.shield(flight.future)
            finally:
                del state.waiting[me]
        return flight.future.result()
