"""What the asyncio facade asks of a shared second tier (embcache.redis.RedisTier
is the one there is), so the facade never imports the tier's module.

A tier stores float32 rows under CacheKeys somewhere other processes see them.
Its methods are named as the cache's and mean the same: ``get_many`` answers
``(matrix, found)`` as ``SyncEmbeddingCache.get_many`` does, ``put_many`` stores
rows under keys, ``remove_many`` removes keys, ``get_tier_info`` is the tier's
``get_cache_info``. They never raise for a failure of the store itself (a tier
that cannot answer misses, counts the failure and lets the cache go on); they
raise only for a programming error and for cancellation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey
from embcache.errors import ArgumentTypeError

__all__ = ["Tier", "TierInfo", "check_tier"]


@dataclass(frozen=True)
class TierInfo:
    """What a tier did so far (over every cache using it), as ``get_tier_info``
    reports it; ``EmbeddingCache.get_cache_info`` shows the first three as
    ``tier_hits``, ``tier_misses`` and ``tier_errors``."""

    hits: int
    """Keys read from the tier and valid."""
    misses: int
    """Keys asked of the tier and not answered: absent, invalid, or not asked
    because the store failed or the breaker was open."""
    errors: int
    """Failed calls to the store (timeouts included) plus values that failed
    validation."""
    skipped: int
    """Keys not read, written or removed because the breaker was open."""
    breaker: str
    """"closed", "open" or "half-open"."""
    breaker_opened: int
    """How many times the breaker has opened."""


@runtime_checkable
class Tier(Protocol):
    """The shared tier's side of the facade's contract."""

    async def get_many(
        self,
        keys: Sequence[CacheKey],
        *,
        dim: int | None = None,
        out: npt.NDArray[np.float32] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """``(matrix, found)`` for `keys`, as SyncEmbeddingCache.get_many: row i
        of the C-contiguous float32 `matrix` is the vector of keys[i] when
        found[i], else zeros. Rows have dimension `dim` (None: that of the first
        valid value; (len(keys), 0) when nothing was found); a value of any
        other dimension is a miss. With `out` (zero-filled, (len(keys), dim)),
        the rows are written there and `matrix` is `out`. One round trip (per
        node)."""

    async def put_many(self, keys: Sequence[CacheKey], matrix: npt.NDArray[np.float32]) -> None:
        """Store row i of the float32 `matrix` under keys[i], pipelined."""

    async def remove_many(self, keys: Sequence[CacheKey]) -> int:
        """Remove `keys`; how many existed."""

    def get_tier_info(self) -> TierInfo:
        """A TierInfo snapshot of the tier's counts."""


def check_tier(tier: object) -> Tier | None:
    """`tier` if it is None or implements Tier; ArgumentTypeError otherwise."""
    if tier is None or isinstance(tier, Tier):
        return tier
    raise ArgumentTypeError(
        "tier must be an embcache.redis.RedisTier (or another object with async "
        f"get_many/put_many/remove_many and get_tier_info), got {type(tier).__name__}"
    )
