"""EmbeddingCache: the asyncio facade over the synchronous Cython core.

Single operations run inline on the event loop: a core call costs a few hundred
nanoseconds, far less than a hop to a worker thread, and it never blocks on I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, SyncEmbeddingCache
from embcache._flight import flights_of
from embcache._info import CacheInfo
from embcache.errors import ArgumentTypeError, ArgumentValueError

__all__ = ["EmbeddingCache"]

log = logging.getLogger("embcache")

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class _Unset:
    """The type of UNSET: a snapshot-limit keyword that was not given."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""A load / open keyword not given: the snapshot's recorded limit is used."""

# A batch is copied in slices of about this many bytes, yielding to the event loop
# between slices, so a large batch never holds the loop for more than about a
# millisecond (row copies run at several GB/s).
SLICE_BYTES = 2 << 20

# Batches of at most this many keys go to the core in one call whatever their
# dimension (a slice would cost more than it saves).
SMALL_KEYS = 64

ComputeFn = Callable[[list[CacheKey]], Union[npt.ArrayLike, Awaitable[npt.ArrayLike]]]


def _small(keys: Sequence[CacheKey], dim: int) -> bool:
    """True for a batch the core handles in one call: few keys, or few bytes at a
    known dimension (and for a `keys` without a length, which the core rejects)."""
    try:
        n = len(keys)
    except TypeError:
        return True
    return n <= SMALL_KEYS or (dim > 0 and n * 4 * dim <= SLICE_BYTES)


class EmbeddingCache:
    """Asyncio embedding cache: the same contract as SyncEmbeddingCache, with
    ``async def`` operations. ``len(cache)`` and ``key in cache`` stay synchronous.

    EmbeddingCache(max_entries=100_000, ttl_seconds=None, max_memory_mb=512.0,
                   *, dim=None, clock=None)
    """

    __slots__ = ("_sync", "_get", "_put", "_flights")

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl_seconds: float | None = None,
        max_memory_mb: float = 512.0,
        *,
        dim: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._sync = SyncEmbeddingCache(
            max_entries, ttl_seconds, max_memory_mb, dim=dim, clock=clock
        )
        # bound once: the awaitable wrappers below then cost one attribute load
        self._get = self._sync.get
        self._put = self._sync.put
        self._flights = flights_of(self._sync)

    @property
    def sync(self) -> SyncEmbeddingCache:
        """The synchronous core this facade wraps (same entries, same stats)."""
        return self._sync

    async def put(self, key: CacheKey, vector: npt.ArrayLike) -> None:
        """Store a float32 copy of `vector` under `key` (see SyncEmbeddingCache.put)."""
        self._put(key, vector)

    async def get(self, key: CacheKey) -> npt.NDArray[np.float32] | None:
        """A new float32 array for `key`, or None (see SyncEmbeddingCache.get)."""
        return self._get(key)

    async def get_many(
        self, keys: Sequence[CacheKey], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """``(matrix, found)`` for `keys` (see SyncEmbeddingCache.get_many).

        A batch larger than about 2 MiB of rows is copied in slices, yielding to
        the event loop between them; other coroutines may then change the cache
        between two slices (each key is still looked up exactly once). Anything
        wrong with the arguments is raised before the first slice, so a call that
        raises has changed no recency and counted nothing.
        """
        sync = self._sync
        known = sync.dim or (out.shape[1] if isinstance(out, np.ndarray) and out.ndim == 2 else 0)
        if _small(keys, known):
            return sync.get_many(keys, out)
        batch = sync.get_batch(keys, out)
        n = batch.n
        step = max(1, SLICE_BYTES // (4 * batch.dim)) if batch.dim else n
        for start in range(0, n, step):
            stop = min(start + step, n)
            batch.read(start, stop)
            if stop < n:
                await asyncio.sleep(0)
        return batch.matrix, batch.found

    async def put_many(self, keys: Sequence[CacheKey], matrix: npt.ArrayLike) -> None:
        """Store row i of `matrix` under keys[i] (see SyncEmbeddingCache.put_many).

        The whole batch is validated before any row is stored, so a bad row
        stores nothing. A large batch is first taken (converted and validated) in
        slices of about 2 MiB into a private copy, then stored from that copy in
        slices, yielding to the event loop between slices: what was taken is what
        is stored, whatever the caller's buffer holds by then.
        """
        sync = self._sync
        if _small(keys, sync.dim or 0):
            sync.put_many(keys, matrix)
            return
        batch = sync.put_batch(keys, matrix)
        n = batch.n
        step = max(1, SLICE_BYTES // (4 * batch.dim)) if batch.dim else n
        if n <= step:
            batch.take()
            batch.store()
            return
        slices = [(start, min(start + step, n)) for start in range(0, n, step)]
        for start, stop in slices:
            batch.take(start, stop)
            await asyncio.sleep(0)
        for start, stop in slices:
            batch.store(start, stop)
            if stop < n:
                await asyncio.sleep(0)

    async def get_or_compute(
        self, keys: Sequence[CacheKey], compute: ComputeFn, *, timeout: float | None = None
    ) -> npt.NDArray[np.float32]:
        """The (len(keys), dim) float32 matrix for `keys`, computing only what is
        missing with one call ``compute(missing_keys)`` (sync or async; it gets the
        distinct missing keys in order and returns an (m, dim) array-like).

        Single flight, shared with every caller on the same SyncEmbeddingCache
        (threads, other event loops, CachedEmbedders): a key someone is already
        computing is awaited, not computed again. If compute raises, nothing is
        stored, every waiter for those keys gets the exception, and a later call
        tries again. Cancelling a waiter cancels nothing else.

        ``timeout`` (seconds > 0, or None: no limit) bounds the call: waiting for
        keys another caller computes raises FlightTimeoutError (a TimeoutError)
        when it is up, leaving that computation to go on; an async compute of this
        call still running then is cancelled (nothing of it is stored, its keys
        go to the callers waiting for them) and FlightTimeoutError is raised. A
        sync compute is not interrupted.
        """
        return await self._flights.get_or_compute_async(self._sync, keys, compute, timeout=timeout)

    async def remove(self, key: CacheKey) -> bool:
        """Delete `key`; True if a live entry was removed."""
        return self._sync.remove(key)

    async def clear(self) -> None:
        """Remove every entry (statistics are kept)."""
        self._sync.clear()

    async def get_cache_info(self) -> CacheInfo:
        """A CacheInfo snapshot of size, bounds, memory and statistics."""
        return self._sync.get_cache_info()

    # -- snapshots -------------------------------------------------------------------

    async def save(self, path: PathLike) -> int:
        """Write every live entry to the snapshot file `path` and return how many
        (see SyncEmbeddingCache.save: atomic, checksummed). The work runs in a
        worker thread, so the event loop goes on serving; the cache lock is held
        only in short steps, so gets and puts go on too."""
        return await asyncio.to_thread(self._sync.save, path)

    @classmethod
    async def load(
        cls,
        path: PathLike,
        *,
        max_entries: int = UNSET,
        ttl_seconds: float | None = UNSET,
        max_memory_mb: float = UNSET,
        dim: int | None = UNSET,
        clock: Callable[[], float] | None = None,
    ) -> EmbeddingCache:
        """A new EmbeddingCache holding the snapshot file `path` (see
        SyncEmbeddingCache.load for the keywords and errors); read and verified
        in a worker thread, so the event loop is not blocked."""
        kwargs = _given(max_entries, ttl_seconds, max_memory_mb, dim)
        sync = await asyncio.to_thread(SyncEmbeddingCache.load, path, clock=clock, **kwargs)
        return cls._around(sync, clock)

    @classmethod
    def _around(cls, sync: SyncEmbeddingCache, clock: Callable[[], float] | None) -> EmbeddingCache:
        """A facade, made by the constructor with `sync`'s limits, whose core is
        then `sync` (a freshly loaded one)."""
        self = cls(sync.max_entries, sync.ttl_seconds, sync.max_memory_mb, dim=sync.dim,
                   clock=clock)
        self._sync = sync
        self._get = sync.get
        self._put = sync.put
        self._flights = flights_of(sync)
        return self

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        path: PathLike,
        *,
        max_entries: int = UNSET,
        ttl_seconds: float | None = UNSET,
        max_memory_mb: float = UNSET,
        dim: int | None = UNSET,
        clock: Callable[[], float] | None = None,
        save_every: float | None = None,
    ) -> AsyncIterator[EmbeddingCache]:
        """Warm start for a service: ``async with EmbeddingCache.open(path, ...) as
        cache:``. On entry the snapshot at `path` is loaded if the file exists
        (the keywords given override its limits, as for load), else a new cache
        is made from the keywords (the constructor's defaults for the others).
        Every `save_every` seconds (None: never) the cache is saved to `path` in
        the background, and once more on exit, also when the body raised. A
        periodic save that fails (a full disk, say) is logged on the
        ``embcache`` logger and retried at the next period; the save on exit
        raises. A snapshot that exists but is invalid raises SnapshotError: move
        it away to start empty."""
        if save_every is not None:
            if isinstance(save_every, bool) or not isinstance(save_every, (int, float)):
                raise ArgumentTypeError(
                    f"save_every must be a number of seconds or None, got "
                    f"{type(save_every).__name__}")
            if not save_every > 0 or save_every == float("inf"):
                raise ArgumentValueError(
                    f"save_every must be a finite number of seconds > 0, got {save_every!r}")
        kwargs = _given(max_entries, ttl_seconds, max_memory_mb, dim)
        try:
            cache = await cls.load(path, clock=clock, **kwargs)
        except FileNotFoundError:
            cache = cls(clock=clock, **kwargs)
        saver = None
        stop = asyncio.Event()
        if save_every is not None:
            saver = asyncio.ensure_future(_save_every(cache, path, save_every, stop))
        try:
            yield cache
        finally:
            if saver is not None:
                # not cancelled: a periodic save under way finishes first, so it can
                # never land after (and over) the final one
                stop.set()
                await saver
            await cache.save(path)

    def __len__(self) -> int:
        return len(self._sync)

    def __contains__(self, key: Any) -> bool:
        return key in self._sync

    def __repr__(self) -> str:
        return "Embedding" + repr(self._sync)[len("SyncEmbedding") :]


def _given(
    max_entries: Any, ttl_seconds: Any, max_memory_mb: Any, dim: Any
) -> dict[str, Any]:
    """The snapshot-limit keywords that were given (not UNSET)."""
    given = {
        "max_entries": max_entries,
        "ttl_seconds": ttl_seconds,
        "max_memory_mb": max_memory_mb,
        "dim": dim,
    }
    return {k: v for k, v in given.items() if v is not UNSET}


async def _save_every(
    cache: EmbeddingCache, path: PathLike, seconds: float, stop: asyncio.Event
) -> None:
    """EmbeddingCache.open's background task: save every `seconds` until `stop`
    is set, logging failures."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
            return
        except asyncio.TimeoutError:
            pass
        try:
            n = await cache.save(path)
        except OSError as exc:
            log.warning("embcache: periodic snapshot to %r failed: %s", path, exc)
        else:
            log.debug("embcache: saved %d entries to %r", n, path)
