"""The claims side of single flight: which keys are in flight, who waits on
what, and how a flight is claimed and settled. ``Claims`` is the state of one
cache's registry (embcache.flight.registry.Flights builds the calls on it); its
lock guards everything here and is never held while user code or the cache
runs. Forked children: every registry abandons the flights of threads that did
not survive the fork (their waiters claim the keys again) and takes a new lock.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Hashable
from typing import TYPE_CHECKING

from embcache.flight.call import Matrix, Plan
from embcache.flight.timeouts import reentry_error
from embcache.flight.wait import Flight, computing, outcome

if TYPE_CHECKING:  # the core is the layer above: its types for the checker only
    from embcache._core import CacheKey

__all__ = ["Claims"]


class Claims:
    """The keys in flight of one cache and the callers waiting on them."""

    __slots__ = ("_lock", "_registry", "_waiting", "_epoch", "_waits", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registry: dict[CacheKey, tuple[Flight, int]] = {}
        self._waiting: dict[Hashable, Flight] = {}
        self._epoch = 0
        self._waits = 0
        _ALL_CLAIMS.add(self)

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
        """How many flights have settled with rows so far. An entry point reads
        it before its lookup and its steps compare it again before computing, so
        that a flight settling in between is noticed (the lookup may be stale)."""
        return self._epoch

    @property
    def waits(self) -> int:
        """How many missed keys callers found in flight and waited for instead of
        computing them (each key of each call once, counted as it is claimed)."""
        return self._waits

    def in_flight(self) -> int:
        """How many keys are being computed right now (for tests and monitoring)."""
        with self._lock:
            return len(self._registry)

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
            self._waits += 1
            return entry[0], entry[1], False

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
            self._waits += len(pending) - len(ours)
            flight = None
            if ours:
                flight = Flight(me, thread, loop)
                for r, j in enumerate(ours):
                    registry[misses[j]] = (flight, r)
            return flight, ours, waits, self._epoch != epoch

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


_ALL_CLAIMS: weakref.WeakSet[Claims] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for claims in list(_ALL_CLAIMS):
        claims.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
