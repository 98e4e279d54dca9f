"""EmbeddingCache: the asyncio facade over the synchronous Cython core.

Single operations run inline on the event loop: a core call costs a few hundred
nanoseconds, far less than a hop to a worker thread, and it never blocks on I/O.

With a shared tier (``tier=``, e.g. embcache.redis.RedisTier) the in-process
core stays the first tier: a hit never touches the tier; what it misses is
asked of the tier (one call per batch) and what the tier has fills the core;
what is stored or computed is written to both. The tier is duck-typed
(embcache.tier.protocol.Tier), so this module never imports redis; reading
through it is embcache.tier.read's, shared with single flight. Each call
checks and converts its keys and values once, here: the in-process cache and
the tier get the same tuple of keys and the same float32 rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, SyncEmbeddingCache, as_key_tuple
from embcache.core.checks import UNSET
from embcache.core.info import CacheInfo
from embcache.core.protocol import CoreCache, Saving
from embcache.errors import ArgumentTypeError
from embcache.facade.across import get_or_compute_across
from embcache.facade.snapshots import (
    PathLike,
    check_folder,
    check_save_every,
    given,
    save_periodically,
)
from embcache.flight.call import all_found, distinct_misses
from embcache.flight.registry import flights_of
from embcache.shared import SharedEmbeddingCache
from embcache.tier.protocol import Tier, check_tier
from embcache.tier.read import TierSource, read_through

__all__ = ["EmbeddingCache", "with_tier_counts"]


def with_tier_counts(info: CacheInfo, tier: Tier | None) -> CacheInfo:
    """`info` with the tier's hits, misses and errors filled in (as is, without a tier)."""
    if tier is None:
        return info
    tier_info = tier.get_tier_info()
    return dataclasses.replace(
        info, tier_hits=tier_info.hits, tier_misses=tier_info.misses, tier_errors=tier_info.errors
    )


# A batch is copied in slices of about this many bytes, yielding to the event loop
# between slices, so a large batch never holds the loop for more than about a
# millisecond (row copies run at several GB/s).
SLICE_BYTES = 2 << 20

# Batches of at most this many keys go to the core in one call whatever their
# dimension (a slice would cost more than it saves).
SMALL_KEYS = 64

Matrix = npt.NDArray[np.float32]
Found = npt.NDArray[np.bool_]
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
                   *, dim=None, clock=None, policy="lru", storage="float32", tier=None,
                   name=None)

    ``tier``: a shared second tier (embcache.redis.RedisTier), or None. With one,
    ``get``, ``get_many`` and ``get_or_compute`` ask the tier for what the
    in-process cache misses (one round trip per call) and store what it has in
    the in-process cache (counted as puts there); ``put``, ``put_many`` and
    computed rows are written to the tier too; ``remove`` deletes from both;
    ``clear`` clears the in-process cache only. The tier never raises for its
    own failures: they are misses, counted in ``get_cache_info().tier_errors``.
    ``SyncEmbeddingCache`` (``.sync``) and its methods never use the tier.

    ``policy``: ``"lru"`` or ``"tinylfu"`` (W-TinyLFU), as for SyncEmbeddingCache.
    ``storage``: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"int8"``, how the
    in-process cache's rows hold vectors, as for SyncEmbeddingCache (lookups
    return float32 whatever it is).

    ``name``: the cache's label in monitoring (embcache.metrics), held by its
    core (``.sync.name``); as for SyncEmbeddingCache.
    """

    __slots__ = ("_sync", "_get", "_put", "_flights", "_tier", "_source", "_across")

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl_seconds: float | None = None,
        max_memory_mb: float = 512.0,
        *,
        dim: int | None = None,
        clock: Callable[[], float] | None = None,
        policy: str = "lru",
        storage: str = "float32",
        tier: Tier | None = None,
        name: str | None = None,
    ) -> None:
        checked = check_tier(tier)
        self._attach(
            SyncEmbeddingCache(
                max_entries,
                ttl_seconds,
                max_memory_mb,
                dim=dim,
                clock=clock,
                policy=policy,
                storage=storage,
                name=name,
            ),
            checked,
        )

    def _attach(self, sync: CoreCache, tier: Tier | None) -> None:
        """Make this facade the face of `sync` over `tier` (checked)."""
        attach_storage = getattr(tier, "attach_storage", None)
        if attach_storage is not None:  # a tier that writes its cache's storage (RedisTier)
            attach_storage(sync.storage)
        self._tier = tier
        self._sync = sync
        # bound once: the awaitable wrappers below then cost one attribute load
        self._get = sync.get
        self._put = sync.put
        self._flights = flights_of(sync)
        # what a single-flight owner reads through and writes back to
        self._source = None if tier is None else TierSource(sync, tier)
        # a host-shared cache without a tier: single flight across processes
        self._across = sync if isinstance(sync, SharedEmbeddingCache) and tier is None else None

    @property
    def sync(self) -> CoreCache:
        """The synchronous cache this facade wraps (same entries, same stats): its
        own SyncEmbeddingCache, or the SyncEmbeddingCache or SharedEmbeddingCache
        given to ``wrap``."""
        return self._sync

    @property
    def name(self) -> str:
        """The cache's label in monitoring (its core's ``name``); never part of a key."""
        return self._sync.name

    @property
    def storage(self) -> str:
        """How the in-process cache's rows hold vectors: "float32", "float16",
        "bfloat16" or "int8"."""
        return self._sync.storage

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
        await self._tier.put_many(batch.keys, batch.rows)

    async def get(self, key: CacheKey) -> npt.NDArray[np.float32] | None:
        """A new float32 array for `key`, or None (see SyncEmbeddingCache.get);
        with a tier, an in-process miss is looked up there (and kept in-process)."""
        vector = self._get(key)
        if vector is not None or self._tier is None:
            return vector
        matrix, found = await read_through(self._sync, self._tier, (key,), self._sync.dim)
        if not found[0]:
            return None
        hit: npt.NDArray[np.float32] = matrix[0]  # a view of the tier's new array
        return hit

    async def _read_through(
        self, keys: Sequence[CacheKey], matrix: Matrix, found: Found
    ) -> tuple[Matrix, Found]:
        """get_many's misses from the tier (its distinct misses in one call), into
        `matrix` (whose miss rows the core zero-filled) when it has a dimension."""
        tier = self._tier
        assert tier is not None
        n = len(keys)
        dim = self._sync.dim or (int(matrix.shape[1]) or None)
        if not found.any() and len(set(keys)) == n:  # every key missed, each once:
            # the tier's answer is the whole answer (straight into matrix with a dim)
            return await read_through(self._sync, tier, keys, dim, out=matrix if dim else None)
        misses, positions, index = distinct_misses(keys, found)
        got, hit = await read_through(self._sync, tier, misses, dim)
        if not hit.any():
            return matrix, found
        if matrix.shape[1] != got.shape[1]:  # no dimension before: the tier's rows fix it
            matrix = np.zeros((n, got.shape[1]), dtype=np.float32)
        matrix[positions] = got[index]
        found[positions] = hit[index]
        return matrix, found

    async def get_many(
        self, keys: Sequence[CacheKey], out: Matrix | None = None
    ) -> tuple[Matrix, Found]:
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
        if self._tier is not None:  # keys read once: the lookup and the tier share them
            keys = as_key_tuple(keys, "get_many")
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

        With a tier, the rows are then written there in one pipeline: the same
        keys and the same float32 rows as were stored in-process.
        """
        sync = self._sync
        if self._tier is None and _small(keys, sync.dim or 0):
            sync.put_many(keys, matrix)
            return
        # through a PutBatch: keys and rows read once; what the tier gets is what was stored
        batch = sync.put_batch(keys, matrix)
        n = batch.n
        step = max(1, SLICE_BYTES // (4 * batch.dim)) if batch.dim else n
        if n <= step:
            batch.take()
            batch.store()
        else:
            slices = [(start, min(start + step, n)) for start in range(0, n, step)]
            for start, stop in slices:
                batch.take(start, stop)
                await asyncio.sleep(0)
            for start, stop in slices:
                batch.store(start, stop)
                if stop < n:
                    await asyncio.sleep(0)
        if self._tier is not None and n:
            await self._tier.put_many(batch.keys, batch.rows)

    async def get_or_compute(
        self, keys: Sequence[CacheKey], compute: ComputeFn, *, timeout: float | None = None
    ) -> npt.NDArray[np.float32]:
        """The (len(keys), dim) float32 matrix for `keys`, computing only what is
        missing with one call ``compute(missing_keys)`` (sync or async; it gets the
        distinct missing keys in order and returns an (m, dim) array-like).

        Single flight, shared with every caller on the same SyncEmbeddingCache
        (threads, other event loops, CachedEmbedders): a key someone is already
        computing is awaited, not computed again. Over a SharedEmbeddingCache
        without a tier (``wrap``), single flight spans every process of the
        host (see ``wrap``). If compute raises, nothing is stored, every waiter
        for those keys gets the exception, and a later call tries again.
        Cancelling a waiter cancels nothing else.

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
        if self._across is not None:
            return await get_or_compute_across(self._across, keys, compute, timeout)
        return await self._flights.get_or_compute_async(
            keys, compute, timeout=timeout, source=self._source
        )

    async def remove(self, key: CacheKey) -> bool:
        """Delete `key` (from the tier too); True if a live entry was removed from
        either."""
        removed = self._sync.remove(key)
        if self._tier is not None:
            removed = bool(await self._tier.remove_many((key,))) or removed
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
        only in short steps, so gets and puts go on too. ArgumentTypeError for a
        wrapped cache that writes no snapshots."""
        sync = self._sync
        if not isinstance(sync, Saving):
            raise ArgumentTypeError(f"a {type(sync).__name__} cannot be saved through this facade")
        return await asyncio.to_thread(sync.save, path)

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
        storage: str = UNSET,
        tier: Tier | None = None,
        name: str | None = None,
    ) -> EmbeddingCache:
        """A new EmbeddingCache holding the snapshot file `path` (see
        SyncEmbeddingCache.load for the keywords and errors; `storage` not given
        is the snapshot's, another converts every vector), over `tier` as the
        constructor's, named `name`; read and verified in a worker thread, so the
        event loop is not blocked."""
        checked = check_tier(tier)
        kwargs = given(max_entries, ttl_seconds, max_memory_mb, dim)
        if storage is not UNSET:
            kwargs["storage"] = storage
        sync = await asyncio.to_thread(
            SyncEmbeddingCache.load, path, clock=clock, policy=policy, name=name, **kwargs
        )
        return cls._around(sync, checked)

    @classmethod
    def wrap(cls, sync: CoreCache, *, tier: Tier | None = None) -> EmbeddingCache:
        """An EmbeddingCache over the existing `sync`, a SyncEmbeddingCache or a
        SharedEmbeddingCache, over `tier` (as the constructor's; None: none): the
        same entries, statistics and single flight, with the async operations
        (for code given a synchronous cache that must also await, such as
        CachedEmbedder.embed). A tier that writes its cache's storage
        (RedisTier) is attached to the storage of `sync`.

        Over a SharedEmbeddingCache the entries are every process's. Without a
        tier, ``get_or_compute`` is the segment's own single flight
        (``SharedEmbeddingCache.get_or_compute``, run in a worker thread so
        the event loop never blocks; an async compute runs on this loop): a
        key missing everywhere is computed once by all the tasks, threads and
        processes of the host asking for it at once, the others wait for it
        (embcache.facade.across says what differs from the in-process
        registry: an error reaches its own caller only, a timeout or a
        cancel stops nothing of the call's worker thread). With a tier it is
        this process's single flight (embcache.flight): the tier is asked
        first, and a process missing a key at the same moment as another
        computes it too. ArgumentTypeError for anything but those two
        caches."""
        if not isinstance(sync, (SyncEmbeddingCache, SharedEmbeddingCache)):
            raise ArgumentTypeError(
                "wrap needs a SyncEmbeddingCache or a SharedEmbeddingCache, got "
                + type(sync).__name__
            )
        return cls._around(sync, check_tier(tier))

    @classmethod
    def _around(cls, sync: CoreCache, tier: Tier | None) -> EmbeddingCache:
        """A facade over the existing `sync` (a freshly loaded one, or wrap's),
        with `tier` (checked), without building a core of its own."""
        self = cls.__new__(cls)
        self._attach(sync, tier)
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
        storage: str = UNSET,
        tier: Tier | None = None,
        save_every: float | None = None,
        name: str | None = None,
    ) -> AsyncIterator[EmbeddingCache]:
        """Warm start for a service: ``async with EmbeddingCache.open(path, ...) as
        cache:``. On entry the snapshot at `path` is loaded if the file exists
        (the keywords given override its limits, as for load), else a new cache
        is made from the keywords (the constructor's defaults for the others);
        `clock`, `policy`, `tier` and `name` are the constructor's. `storage` not
        given is the snapshot's (or "float32" for a new cache); given, a snapshot of
        another storage is converted.
        Every `save_every` seconds (None: never) the cache is saved to `path` in
        the background, and once more on exit, also when the body raised. A
        periodic save that fails (a full disk, say) is logged on the
        ``embcache`` logger and retried at the next period; the save on exit
        raises. A snapshot that exists but is invalid raises SnapshotError: move
        it away to start empty. A folder of `path` that no save could ever write
        to (missing, not a folder, not writable) raises SnapshotFolderError (an
        OSError) on entry, before any request is served."""
        period = check_save_every(save_every)
        kwargs = given(max_entries, ttl_seconds, max_memory_mb, dim)
        if storage is not UNSET:
            kwargs["storage"] = storage
        check_folder(path)
        try:
            cache = await cls.load(
                path, clock=clock, policy=policy, tier=tier, name=name, **kwargs
            )
        except FileNotFoundError:
            cache = cls(clock=clock, policy=policy, tier=tier, name=name, **kwargs)
        saver = None
        stop = asyncio.Event()
        if period is not None:
            saver = asyncio.ensure_future(save_periodically(cache, path, period, stop))
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
        if isinstance(self._sync, SyncEmbeddingCache):
            return "Embedding" + repr(self._sync)[len("SyncEmbedding") :]
        return f"EmbeddingCache.wrap({self._sync!r})"
