"""What the asyncio facade asks of a shared second tier (embcache.redis.RedisTier
is the one there is), so the facade never imports the tier's module.

A tier stores float32 rows under CacheKeys somewhere other processes see them.
Its methods never raise for a failure of the store itself (a tier that cannot
answer misses, counts the failure and lets the cache go on); they raise only
for a programming error and for cancellation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey
from embcache.errors import ArgumentTypeError

__all__ = ["Tier", "TierCounts", "check_tier"]


class TierCounts(Protocol):
    """The tier's statistics, as CacheInfo reports them."""

    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def errors(self) -> int: ...


@runtime_checkable
class Tier(Protocol):
    """The shared tier's side of the facade's contract."""

    async def fetch(
        self,
        keys: Sequence[CacheKey],
        dim: int | None,
        out: npt.NDArray[np.float32] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]:
        """``(rows, index)`` for distinct `keys`, in one round trip (per node): row
        r of the new C-contiguous float32 `rows` is the vector of ``keys[index[r]]``
        (index ascending); rows have dimension `dim` (None: that of the first
        valid value); any other value is a miss. With `out` (zero-filled,
        (len(keys), dim)), the vector of keys[i] goes to out[i], and `rows` is
        `out`."""

    async def store(self, keys: Sequence[CacheKey], matrix: npt.NDArray[np.float32]) -> None:
        """Write row i of the validated float32 `matrix` under keys[i], pipelined."""

    async def delete(self, keys: Sequence[CacheKey]) -> int:
        """Delete `keys`; how many existed."""

    def counts(self) -> TierCounts:
        """Hits, misses and errors so far."""


def check_tier(tier: object) -> Tier | None:
    """`tier` if it is None or implements Tier; ArgumentTypeError otherwise."""
    if tier is None or isinstance(tier, Tier):
        return tier
    raise ArgumentTypeError(
        "tier must be an embcache.redis.RedisTier (or another object with async "
        f"fetch/store/delete and counts), got {type(tier).__name__}"
    )
