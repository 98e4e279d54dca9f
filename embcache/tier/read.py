"""Read-through: asking a shared tier for what the in-process cache missed, and
keeping what it had in-process. The one implementation that
``EmbeddingCache.get``, ``EmbeddingCache.get_many`` and a single-flight owner
(embcache.flight) all use.

    (the distinct-miss mapping of a lookup: embcache.flight.call.distinct_misses)
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

from embcache._core import CacheKey, decode_rows, encode_rows
from embcache.core.protocol import CoreCache
from embcache.tier.protocol import Tier

__all__ = ["TierSource", "keep_rows", "read_through"]

Matrix = npt.NDArray[np.float32]
Found = npt.NDArray[np.bool_]
Index = npt.NDArray[np.intp]


def keep_rows(cache: CoreCache, keys: Sequence[CacheKey], matrix: Matrix, found: Found) -> bool:
    """Store row i of `matrix` under keys[i] in `cache` for every found[i] (rows
    a tier answered), in one put_many. False, storing nothing, when the cache
    cannot hold them (rows larger than its budget, of another dimension than
    its fixed one, or values its storage cannot hold): the rows are still good
    answers, just not kept.

    Kept rows of a compact storage are rewritten in `matrix` as the cache now
    holds them (encoded in its storage, decoded), so a read-through answers what
    every later hit on those keys answers, whatever encoding the tier's values
    were written in."""
    every = bool(len(found)) and bool(found.all())
    if every:
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
    storage = cache.storage
    if storage != "float32":
        held = decode_rows(encode_rows(np.ascontiguousarray(rows), storage), storage, rows.shape[1])
        if every:
            matrix[...] = held
        else:
            matrix[index] = held
    return True


async def read_through(
    cache: CoreCache,
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

    def __init__(self, cache: CoreCache, tier: Tier) -> None:
        self.cache = cache
        self.tier = tier

    def read(self, keys: list[CacheKey], dim: int | None) -> Awaitable[tuple[Matrix, Found]]:
        return read_through(self.cache, self.tier, keys, dim)

    def write(self, keys: list[CacheKey], rows: Matrix) -> Awaitable[None]:
        return self.tier.put_many(keys, rows)
