"""DictTier: a shared tier in a dict, implementing the facade's Tier protocol
(embcache/tier/protocol.py) without a server, for tests of the tiered paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embcache import CacheKey
from embcache.tier.protocol import TierInfo

__all__ = ["DictTier"]


class DictTier:
    """A shared tier in a dict (the facade's Tier protocol): rows kept as bytes."""

    def __init__(self) -> None:
        self.stored: dict[CacheKey, bytes] = {}
        self.hits = self.misses = 0

    async def get_many(
        self, keys: Sequence[CacheKey], *, dim: int | None = None, out: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = [self.stored.get(k) for k in keys]
        found = np.array(
            [r is not None and (dim is None or len(r) == 4 * dim) for r in rows], dtype=np.bool_
        )
        if dim is None:
            dim = next((len(r) // 4 for r, f in zip(rows, found) if f), 0)
            found &= np.array([r is not None and len(r) == 4 * dim for r in rows], dtype=np.bool_)
        matrix = np.zeros((len(keys), dim), dtype=np.float32) if out is None else out
        for i in np.flatnonzero(found).tolist():
            matrix[i] = np.frombuffer(rows[i], dtype=np.float32)  # type: ignore[arg-type]
        matrix[~found] = 0.0
        self.hits += int(found.sum())
        self.misses += len(keys) - int(found.sum())
        return matrix, found

    async def put_many(self, keys: Sequence[CacheKey], matrix: np.ndarray) -> None:
        assert matrix.dtype == np.float32 and matrix.shape[0] == len(keys)
        for k, row in zip(keys, matrix):
            self.stored[k] = row.tobytes()

    async def remove_many(self, keys: Sequence[CacheKey]) -> int:
        return sum(self.stored.pop(k, None) is not None for k in keys)

    def get_tier_info(self) -> TierInfo:
        return TierInfo(self.hits, self.misses, 0, 0, "closed", 0)
