"""EmbeddingCache: the asyncio facade over the synchronous Cython core.

Single operations run inline on the event loop: a core call costs a few hundred
nanoseconds, far less than a hop to a worker thread, and it never blocks on I/O.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, SyncEmbeddingCache
from embcache._info import CacheInfo

__all__ = ["EmbeddingCache"]


class EmbeddingCache:
    """Asyncio embedding cache: the same contract as SyncEmbeddingCache, with
    ``async def`` operations. ``len(cache)`` and ``key in cache`` stay synchronous.

    EmbeddingCache(max_entries=100_000, ttl_seconds=None, max_memory_mb=512.0,
                   *, dim=None, clock=None)
    """

    __slots__ = ("_sync", "_get", "_put")

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl_seconds: Optional[float] = None,
        max_memory_mb: float = 512.0,
        *,
        dim: Optional[int] = None,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        self._sync = SyncEmbeddingCache(max_entries, ttl_seconds, max_memory_mb, dim=dim, clock=clock)
        # bound once: the awaitable wrappers below then cost one attribute load
        self._get = self._sync.get
        self._put = self._sync.put

    @property
    def sync(self) -> SyncEmbeddingCache:
        """The synchronous core this facade wraps (same entries, same stats)."""
        return self._sync

    async def put(self, key: CacheKey, vector: npt.ArrayLike) -> None:
        """Store a float32 copy of `vector` under `key` (see SyncEmbeddingCache.put)."""
        self._put(key, vector)

    async def get(self, key: CacheKey) -> Optional[npt.NDArray[np.float32]]:
        """A new float32 array for `key`, or None (see SyncEmbeddingCache.get)."""
        return self._get(key)  # type: ignore[no-any-return]

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
        return "Embedding" + repr(self._sync)[len("SyncEmbedding"):]
