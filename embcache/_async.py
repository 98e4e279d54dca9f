"""EmbeddingCache: the asyncio facade over the synchronous Cython core.

Single operations run inline on the event loop: a core call costs a few hundred
nanoseconds, far less than a hop to a worker thread, and it never blocks on I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, SyncEmbeddingCache
from embcache._flight import AsyncFlights
from embcache._info import CacheInfo

__all__ = ["EmbeddingCache"]

# A batch is copied in slices of about this many bytes, yielding to the event loop
# between slices, so a large batch never holds the loop for more than about a
# millisecond (row copies run at several GB/s).
SLICE_BYTES = 2 << 20

ComputeFn = Callable[[list[CacheKey]], Union[npt.ArrayLike, Awaitable[npt.ArrayLike]]]


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
        self._flights = AsyncFlights()

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
        between two slices (each key is still looked up exactly once).
        """
        sync = self._sync
        # everything a slice could reject is checked before the first slice runs
        keys = sync._as_keys(keys)
        out_dim = sync._check_out(out, len(keys)) if out is not None else 0
        live_dim = None
        dim = sync.dim or out_dim
        if not dim:
            dim = live_dim = sync._live_dim(keys)
        step = max(1, SLICE_BYTES // (4 * dim)) if dim else len(keys)
        if len(keys) <= step:
            return sync.get_many(keys, out)
        if live_dim is None:
            live_dim = sync._live_dim(keys)  # raises for mixed dimensions
        if out_dim and live_dim and out_dim != live_dim:
            return sync.get_many(keys, out)  # raises DimensionMismatchError, changes nothing
        if out is None:
            out = np.empty((len(keys), dim), dtype=np.float32)
        found = np.empty(len(keys), dtype=np.bool_)
        get_many = sync.get_many
        for start in range(0, len(keys), step):
            stop = min(start + step, len(keys))
            found[start:stop] = get_many(keys[start:stop], out[start:stop])[1]
            if stop < len(keys):
                await asyncio.sleep(0)
        return out, found

    async def put_many(self, keys: Sequence[CacheKey], matrix: npt.ArrayLike) -> None:
        """Store row i of `matrix` under keys[i] (see SyncEmbeddingCache.put_many).

        The whole batch is validated before any row is stored, so a bad row
        stores nothing; a large batch is validated and then stored in slices of
        about 2 MiB, yielding to the event loop between them.
        """
        sync = self._sync
        batch = sync._prepare_batch(keys, matrix)
        if batch.n == 0:
            return
        step = max(1, SLICE_BYTES // (4 * int(np.shape(matrix)[1])))
        slices = [(start, min(start + step, batch.n)) for start in range(0, batch.n, step)]
        for phase in (sync._check_batch, sync._store_batch):
            for start, stop in slices:
                phase(batch, start, stop)
                if len(slices) > 1:
                    await asyncio.sleep(0)

    async def get_or_compute(
        self, keys: Sequence[CacheKey], compute: ComputeFn
    ) -> npt.NDArray[np.float32]:
        """The (len(keys), dim) float32 matrix for `keys`, computing only what is
        missing with one call ``compute(missing_keys)`` (sync or async; it gets the
        distinct missing keys in order and returns an (m, dim) array-like).

        Single flight: a key another coroutine is already computing is awaited,
        not computed again. If compute raises, nothing is stored, every waiter
        for those keys gets the exception, and a later call tries again.
        Cancelling a waiter cancels nothing else.
        """
        return await self._flights.get_or_compute(self._sync, keys, compute)

    async def remove(self, key: CacheKey) -> bool:
        """Delete `key`; True if a live entry was removed."""
        return self._sync.remove(key)

    async def clear(self) -> None:
        """Remove every entry (statistics are kept)."""
        self._sync.clear()

    async def get_cache_info(self) -> CacheInfo:
        """A CacheInfo snapshot of size, bounds, memory and statistics."""
        return self._sync.get_cache_info()

    def __len__(self) -> int:
        return len(self._sync)

    def __contains__(self, key: Any) -> bool:
        return key in self._sync

    def __repr__(self) -> str:
        return "Embedding" + repr(self._sync)[len("SyncEmbedding") :]
