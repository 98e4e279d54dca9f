"""Read-through: asking a shared tier for what the in-process cache missed, and
keeping what it had in-process. The one implementation that
``EmbeddingCache.get``, ``EmbeddingCache.get_many`` and a single-flight owner
(embcache.flight) all use.

    distinct_misses(keys, found) -> (misses, positions, index)
    read_through(cache, tier, misses, dim) -> (matrix, found): tier.get_many,
        then the rows found kept in `cache` (one put_many: one lock)
    TierSource(cache, tier): the same, as the read-through source a
        single-flight owner asks (embcache.flight.registry.Source)

"Misses" always means the distinct missed keys of a lookup, in
first-occurrence order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, SyncEmbeddingCache
from embcache.tier.protocol import Tier

__all__ = ["TierSource", "distinct_misses", "keep_rows", "read_through"]

Matrix = npt.NDArray[np.float32]
Found = npt.NDArray[np.bool_]
Index = npt.NDArray[np.intp]


def distinct_misses(keys: Sequence[CacheKey], found: Found) -> tuple[list[CacheKey], Index, Index]:
    """``(misses, positions, index)`` of a lookup of `keys` that answered
    `found`: `misses` are the distinct keys not found, in first-occurrence
    order; input position ``positions[i]`` takes the row of
    ``misses[index[i]]``."""
    positions = np.flatnonzero(~found)
    missed = [keys[p] for p in positions.tolist()]
    number = dict.fromkeys(missed)  # C loops: hashing, then the distinct keys in order
    misses = list(number)
    if len(misses) == len(missed):  # no key missed twice: the mapping is the identity
        return misses, positions, np.arange(len(missed), dtype=np.intp)
    number.update(zip(misses, range(len(misses))))
    index = np.fromiter(map(number.__getitem__, missed), np.intp, len(missed))
    return misses, positions, index


def keep_rows(
    cache: SyncEmbeddingCache, keys: Sequence[CacheKey], matrix: Matrix, found: Found
) -> bool:
    """Store row i of `matrix` under keys[i] in `cache` for every found[i] (rows
    a tier answered), in one put_many. False, storing nothing, when the cache
    cannot hold them (rows larger than its budget, or of another dimension than
    its fixed one): the rows are still good answers, just not kept."""
    if len(found) and found.all():
        got_keys, rows = keys, matrix
    else:
        index = np.flatnonzero(found)
        if not len(index):
            return True
        got_keys, rows = [keys[i] for i in index.tolist()], matrix[index]
    try:
        cache.put_many(got_keys, rows)
    except ValueError:
        return False
    return True


async def read_through(
    cache: SyncEmbeddingCache,
    tier: Tier,
    keys: Sequence[CacheKey],
    dim: int | None,
    out: Matrix | None = None,
) -> tuple[Matrix, Found]:
    """``tier.get_many(keys, dim=dim, out=out)``, whose found rows are then kept
    in `cache` (see keep_rows). `keys` are the distinct misses of a lookup in
    `cache`, already checked (a tuple or list of CacheKey)."""
    matrix, found = await tier.get_many(keys, dim=dim, out=out)
    keep_rows(cache, keys, matrix, found)
    return matrix, found


class TierSource:
    """A shared tier as the read-through source of a single-flight owner
    (embcache.flight.registry.Source): ``read`` is read_through into `cache`,
    ``write`` the tier's put_many."""

    __slots__ = ("cache", "tier")

    def __init__(self, cache: SyncEmbeddingCache, tier: Tier) -> None:
        self.cache = cache
        self.tier = tier

    def read(self, keys: list[CacheKey], dim: int | None) -> Awaitable[tuple[Matrix, Found]]:
        return read_through(self.cache, self.tier, keys, dim)

    def write(self, keys: list[CacheKey], rows: Matrix) -> Awaitable[None]:
        return self.tier.put_many(keys, rows)
