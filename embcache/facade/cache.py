"""EmbeddingCache: the asyncio facade over the synchronous Cython core.

Single operations run inline on the event loop: a core call costs a few hundred
nanoseconds, far less than a hop to a worker thread, and it never blocks on I/O.

With a shared tier (``tier=``, e.g. embcache.redis.RedisTier) the in-process
core stays the first tier: a hit never touches the tier; what it misses is
asked of the tier (one call per batch) and what the tier has fills the core;
what is stored or computed is written to both. The tier is duck-typed
(embcache.tier.protocol.Tier), so this module never imports redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, SyncEmbeddingCache, as_key_tuple
from embcache.core.info import CacheInfo
from embcache.errors import ArgumentTypeError, ArgumentValueError, SnapshotFolderError
from embcache.flight.call import all_found
from embcache.flight.registry import flights_of
from embcache.tier.protocol import Tier, check_tier

__all__ = ["EmbeddingCache", "with_tier_counts"]


def with_tier_counts(info: CacheInfo, tier: Tier | None) -> CacheInfo:
    """`info` with the tier's hits, misses and errors filled in (as is, without a tier)."""
    if tier is None:
        return info
    counts = tier.counts()
    return dataclasses.replace(
        info, tier_hits=counts.hits, tier_misses=counts.misses, tier_errors=counts.errors
    )


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
                   *, dim=None, clock=None, policy="lru", tier=None)

    ``tier``: a shared second tier (embcache.redis.RedisTier), or None. With one,
    ``get``, ``get_many`` and ``get_or_compute`` ask the tier for what the
    in-process cache misses (one round trip per call) and store what it has in
    the in-process cache (counted as puts there); ``put``, ``put_many`` and
    computed rows are written to the tier too; ``remove`` deletes from both;
    ``clear`` clears the in-process cache only. The tier never raises for its
    own failures: they are misses, counted in ``get_cache_info().tier_errors``.
    ``SyncEmbeddingCache`` (``.sync``) and its methods never use the tier.

    ``policy``: ``"lru"`` or ``"tinylfu"`` (W-TinyLFU), as for SyncEmbeddingCache.
    """

    __slots__ = ("_sync", "_get", "_put", "_flights", "_tier")

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl_seconds: float | None = None,
        max_memory_mb: float = 512.0,
        *,
        dim: int | None = None,
        clock: Callable[[], float] | None = None,
        policy: str = "lru",
        tier: Tier | None = None,
    ) -> None:
        self._tier = check_tier(tier)
        self._sync = SyncEmbeddingCache(
            max_entries, ttl_seconds, max_memory_mb, dim=dim, clock=clock, policy=policy
        )
        # bound once: the awaitable wrappers below then cost one attribute load
        self._get = self._sync.get
        self._put = self._sync.put
        self._flights = flights_of(self._sync)

    @property
    def sync(self) -> SyncEmbeddingCache:
        """The synchronous core this facade wraps (same entries, same stats)."""
        return self._sync

    @property
    def tier(self) -> Tier | None:
        """The shared second tier, or None."""
        return self._tier

    async def put(self, key: CacheKey, vector: npt.ArrayLike) -> None:
        """Store a float32 copy of `vector` under `key` (see SyncEmbeddingCache.put);
        with a tier, then write it there too (a rejected vector goes nowhere)."""
        if self._tier is None:
            self._put(key, vector)
            return
        # read and checked once, as put reads a vector (what="vector"), into a
        # private row: the in-process cache and the tier get the same bytes
        batch = self._sync.put_batch((key,), vector, what="vector")
        batch.take()
        batch.store()
        await self._tier.store((key,), batch.rows)

    async def get(self, key: CacheKey) -> npt.NDArray[np.float32] | None:
        """A new float32 array for `key`, or None (see SyncEmbeddingCache.get);
        with a tier, an in-process miss is looked up there (and kept in-process)."""
        vector = self._get(key)
        if vector is not None or self._tier is None:
            return vector
        rows, index = await self._tier.fetch((key,), self._sync.dim)
        if not len(index):
            return None
        self._fill((key,), rows)
        hit: npt.NDArray[np.float32] = rows[0]  # a view of the tier's new array
        return hit

    def _fill(self, keys: Sequence[CacheKey], rows: npt.NDArray[np.float32]) -> None:
        """Keep rows the tier had in the in-process cache; a row it cannot hold
        (too large for its budget) is still returned, just not kept."""
        try:
            self._sync.put_many(keys, rows)
        except ValueError:
            pass

    async def _read_through(
        self,
        keys: Sequence[CacheKey],
        matrix: npt.NDArray[np.float32],
        found: npt.NDArray[np.bool_],
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """get_many's misses from the tier (its distinct keys in one call), into
        `matrix` (whose miss rows the core zero-filled) when it has a dimension."""
        tier = self._tier
        assert tier is not None
        seq = as_key_tuple(keys, "get_many")
        n = len(seq)
        miss = np.flatnonzero(~found)
        dim = self._sync.dim or (int(matrix.shape[1]) or None)
        if len(miss) == n and len(set(seq)) == n:  # all missed, all distinct: no mapping
            if dim is not None:  # straight into the matrix (its miss rows are zero)
                _, index = await tier.fetch(seq, dim, out=matrix)
                if len(index) == n:
                    found[:] = True
                    self._fill(seq, matrix)
                elif len(index):
                    found[index] = True
                    self._fill([seq[i] for i in index.tolist()], matrix[index])
                return matrix, found
            rows, index = await tier.fetch(seq, None)
            if not len(index):
                return matrix, found
            if len(index) == n:  # the tier's new rows, in order and complete: the answer
                matrix = rows
            else:
                matrix = np.zeros((n, rows.shape[1]), dtype=np.float32)
                matrix[index] = rows
            found[index] = True
            self._fill([seq[i] for i in index.tolist()], rows)
            return matrix, found
        slot: dict[CacheKey, int] = {}
        for i in miss.tolist():
            slot.setdefault(seq[i], len(slot))
        wanted = list(slot)
        rows, index = await tier.fetch(wanted, dim)
        if not len(index):
            return matrix, found
        if matrix.shape[1] != rows.shape[1]:
            matrix = np.zeros((n, rows.shape[1]), dtype=np.float32)
        row_of = np.full(len(wanted), -1, dtype=np.intp)
        row_of[index] = np.arange(len(index))
        at = row_of[np.fromiter((slot[seq[i]] for i in miss.tolist()), np.intp, len(miss))]
        take = at >= 0
        matrix[miss[take]] = rows[at[take]]
        found[miss[take]] = True
        self._fill([wanted[j] for j in index.tolist()], rows)
        return matrix, found

    async def get_many(
        self, keys: Sequence[CacheKey], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """``(matrix, found)`` for `keys` (see SyncEmbeddingCache.get_many).

        A batch larger than about 2 MiB of rows is copied in slices, yielding to
        the event loop between them; other coroutines may then change the cache
        between two slices (each key is still looked up exactly once). Anything
        wrong with the arguments is raised before the first slice, so a call that
        raises has changed no recency and counted nothing.

        With a tier, the keys missed in-process are then asked of the tier in
        one call; a row found there is returned (found True) and kept in-process.
        """
        sync = self._sync
        known = sync.dim or (out.shape[1] if isinstance(out, np.ndarray) and out.ndim == 2 else 0)
        if _small(keys, known):
            matrix, found = sync.get_many(keys, out)
        else:
            batch = sync.get_batch(keys, out)
            n = batch.n
            step = max(1, SLICE_BYTES // (4 * batch.dim)) if batch.dim else n
            for start in range(0, n, step):
                stop = min(start + step, n)
                batch.read(start, stop)
                if stop < n:
                    await asyncio.sleep(0)
            matrix, found = batch.matrix, batch.found
        if self._tier is None or all_found(found):
            return matrix, found
        return await self._read_through(keys, matrix, found)

    async def put_many(self, keys: Sequence[CacheKey], matrix: npt.ArrayLike) -> None:
        """Store row i of `matrix` under keys[i] (see SyncEmbeddingCache.put_many).

        The whole batch is validated before any row is stored, so a bad row
        stores nothing. A large batch is first taken (converted and validated) in
        slices of about 2 MiB into a private copy, then stored from that copy in
        slices, yielding to the event loop between slices: what was taken is what
        is stored, whatever the caller's buffer holds by then.

        With a tier, the rows are then written there in one pipeline.
        """
        sync = self._sync
        if self._tier is None and _small(keys, sync.dim or 0):
            sync.put_many(keys, matrix)
            return
        # with a tier, through a PutBatch: the rows written there are the ones stored
        batch = sync.put_batch(keys, matrix)
        n = batch.n
        step = max(1, SLICE_BYTES // (4 * batch.dim)) if batch.dim else n
        if n <= step:
            batch.take()
            batch.store()
            if self._tier is not None and n:
                await self._tier.store(batch.keys, batch.rows)
            return
        slices = [(start, min(start + step, n)) for start in range(0, n, step)]
        for start, stop in slices:
            batch.take(start, stop)
            await asyncio.sleep(0)
        for start, stop in slices:
            batch.store(start, stop)
            if stop < n:
                await asyncio.sleep(0)
        if self._tier is not None:
            await self._tier.store(batch.keys, batch.rows)

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

        With a tier, the caller computing a set of keys first asks the tier for
        them (one call) and computes only what the tier lacks; the computed rows
        are written to the tier in one pipeline. Single flight covers both
        tiers: callers waiting for those keys wait for the tier's answer too.
        """
        return await self._flights.get_or_compute_async(
            self._sync, keys, compute, timeout=timeout, tier=self._tier
        )

    async def remove(self, key: CacheKey) -> bool:
        """Delete `key` (from the tier too); True if a live entry was removed from
        either."""
        removed = self._sync.remove(key)
        if self._tier is not None:
            removed = bool(await self._tier.delete((key,))) or removed
        return removed

    async def clear(self) -> None:
        """Remove every entry of the in-process cache (statistics are kept; the
        tier is left alone: see RedisTier.drop_model)."""
        self._sync.clear()

    async def get_cache_info(self) -> CacheInfo:
        """A CacheInfo snapshot of size, bounds, memory and statistics; with a
        tier, ``tier_hits``, ``tier_misses`` and ``tier_errors`` are the tier's
        counts (zeros without one)."""
        return with_tier_counts(self._sync.get_cache_info(), self._tier)

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
        policy: str = "lru",
        tier: Tier | None = None,
    ) -> EmbeddingCache:
        """A new EmbeddingCache holding the snapshot file `path` (see
        SyncEmbeddingCache.load for the keywords and errors), over `tier` as the
        constructor's; read and verified in a worker thread, so the event loop is
        not blocked."""
        check_tier(tier)
        kwargs = _given(max_entries, ttl_seconds, max_memory_mb, dim)
        sync = await asyncio.to_thread(
            SyncEmbeddingCache.load, path, clock=clock, policy=policy, **kwargs
        )
        return cls._around(sync, clock, tier)

    @classmethod
    def _around(
        cls, sync: SyncEmbeddingCache, clock: Callable[[], float] | None, tier: Tier | None
    ) -> EmbeddingCache:
        """A facade, made by the constructor with `sync`'s limits, whose core is
        then `sync` (a freshly loaded one)."""
        self = cls(
            sync.max_entries,
            sync.ttl_seconds,
            sync.max_memory_mb,
            dim=sync.dim,
            clock=clock,
            policy=sync.policy,
            tier=tier,
        )
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
        policy: str = "lru",
        tier: Tier | None = None,
        save_every: float | None = None,
    ) -> AsyncIterator[EmbeddingCache]:
        """Warm start for a service: ``async with EmbeddingCache.open(path, ...) as
        cache:``. On entry the snapshot at `path` is loaded if the file exists
        (the keywords given override its limits, as for load), else a new cache
        is made from the keywords (the constructor's defaults for the others);
        `clock`, `policy` and `tier` are the constructor's.
        Every `save_every` seconds (None: never) the cache is saved to `path` in
        the background, and once more on exit, also when the body raised. A
        periodic save that fails (a full disk, say) is logged on the
        ``embcache`` logger and retried at the next period; the save on exit
        raises. A snapshot that exists but is invalid raises SnapshotError: move
        it away to start empty. A folder of `path` that no save could ever write
        to (missing, not a folder, not writable) raises SnapshotFolderError (an
        OSError) on entry, before any request is served."""
        if save_every is not None:
            if isinstance(save_every, bool) or not isinstance(save_every, (int, float)):
                raise ArgumentTypeError(
                    f"save_every must be a number of seconds or None, got "
                    f"{type(save_every).__name__}"
                )
            if not save_every > 0 or save_every == float("inf"):
                raise ArgumentValueError(
                    f"save_every must be a finite number of seconds > 0, got {save_every!r}"
                )
        kwargs = _given(max_entries, ttl_seconds, max_memory_mb, dim)
        _check_folder(path)
        try:
            cache = await cls.load(path, clock=clock, policy=policy, tier=tier, **kwargs)
        except FileNotFoundError:
            cache = cls(clock=clock, policy=policy, tier=tier, **kwargs)
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


def _check_folder(path: PathLike) -> None:
    """SnapshotFolderError unless the folder `path` names a file in (for a
    symbolic link, the folder of the file it names, as save follows it) exists, is a
    folder, and this process may create files in it (``os.access``: write and
    search permission, or for root a file system that is not read-only)."""
    try:
        name = os.fspath(path)
    except TypeError:
        return  # not a path: load says so
    if os.path.islink(name):
        name = os.path.realpath(name)  # save writes through a link: its target's folder
    folder = os.path.dirname(os.path.abspath(name))
    shown = os.fsdecode(folder)
    try:
        mode = os.stat(folder).st_mode
    except FileNotFoundError:
        raise _folder_error(
            errno.ENOENT,
            f"the snapshot's folder {shown!r} does not exist; create it (the cache is "
            "saved there on exit, and every save_every seconds)",
            shown,
        ) from None
    except NotADirectoryError:
        mode = 0  # a file where a folder of the path should be
    except OSError as exc:
        raise _folder_error(
            exc.errno or errno.EACCES,
            f"the snapshot's folder {shown!r} cannot be reached: {exc.strerror or exc}",
            shown,
        ) from None
    if not stat.S_ISDIR(mode):
        raise _folder_error(
            errno.ENOTDIR,
            f"the snapshot's folder {shown!r} is not a folder (a file is in its place or "
            "on its path)",
            shown,
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _folder_error(
            errno.EACCES,
            f"the snapshot's folder {shown!r} is not writable by this process, so the "
            "cache could never be saved there",
            shown,
        )


def _folder_error(code: int, message: str, folder: str) -> SnapshotFolderError:
    error = SnapshotFolderError(code, "EmbeddingCache.open: " + message)
    error.filename = folder
    return error


def _given(max_entries: Any, ttl_seconds: Any, max_memory_mb: Any, dim: Any) -> dict[str, Any]:
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
