"""The host-shared cache: SharedEmbeddingCache beside SyncEmbeddingCache of the same
dim (768) and storage doing the same work, in one process. tools/shared_speed.py
runs the get and get_many loops interleaved and prints the ratios; how the segment
scales over processes is tools/shared_scaling.py (asv times one process).

params ``storage`` x ``cache``:

* ``storage``: "float32", "float16", "bfloat16", "int8". A storage the segment
  does not take (SharedEmbeddingCache raises ArgumentValueError for it) is skipped
  for both caches (NotImplementedError in setup), so the pair is always compared.
* ``cache``: "sync" (SyncEmbeddingCache(..., dim=768, storage=storage)) or
  "shared" (SharedEmbeddingCache(name, ..., dim=768, storage=storage), a segment in
  /dev/shm under a name of this process).

* SharedGetHit: ``cache.get(key)`` x 1000, hits in a fixed random order (each a new
  float32 array); seconds per operation.
* SharedGetMany: ``cache.get_many(keys)`` of 1000 random keys of the cache into a
  new matrix; seconds per row.
* SharedPut: ``cache.put(key, row)`` x 1000 of keys not in the cache, 1000
  distinct rows; setup removes the keys again; seconds per operation.

Each cache holds 10,000 standard normal rows (seed SEED) and has room for twice
as many: the segment's capacity is split over independently locked stripes, so
the headroom keeps every stripe below its bound (nothing evicted while filling).
The filled caches are built once per process (memo), which touches every page the
timed code reads. Every ``teardown`` unlinks the segment's name (the mapping this
process holds stays usable for the samples that follow), so no run leaves a file
in /dev/shm.
"""

from __future__ import annotations

import os
import secrets
from time import perf_counter
from typing import Any

import numpy as np

from embcache import CacheKey, SharedEmbeddingCache, SyncEmbeddingCache
from embcache.errors import ArgumentValueError

from ._util import OPS, SEED, PerOp, make_keys, memo, shuffled

STORAGES = ["float32", "float16", "bfloat16", "int8"]
"""The ``storage`` parameter. Stable: never reorder, only append."""
CACHES = ["sync", "shared"]
"""The ``cache`` parameter. Stable: never reorder, only append."""
DIM = 768
ENTRIES = 10_000
BATCH = 1000

SEGMENTS: list[str] = []
"""Names of the segments this process made (teardown unlinks them)."""


def rows(n: int, salt: int = 0) -> np.ndarray:
    """`n` standard normal float32 rows of DIM (fixed seed + `salt`)."""
    return np.random.default_rng(SEED + salt).standard_normal((n, DIM)).astype(np.float32)


def segment_name(storage: str) -> str:
    """A segment name no other process uses."""
    return f"embcache-bench-{os.getpid()}-{storage}-{secrets.token_hex(4)}"


def make_cache(cache: str, storage: str) -> Any:
    """An empty cache of kind `cache` for ENTRIES rows (with room for twice as many)."""
    capacity = 2 * (ENTRIES + OPS)
    budget = capacity * (DIM * 4 + 256) / 2**20
    if cache == "sync":
        return SyncEmbeddingCache(capacity, None, budget, dim=DIM, storage=storage)
    name = segment_name(storage)
    try:
        shared = SharedEmbeddingCache(name, capacity, None, budget, dim=DIM, storage=storage)
    except ArgumentValueError as exc:
        raise NotImplementedError(f"SharedEmbeddingCache: {exc}") from exc
    SEGMENTS.append(name)
    return shared


def require_storage(storage: str) -> None:
    """Skip (NotImplementedError) a storage the segment does not take, for both caches."""

    def probe() -> bool:
        name = segment_name(storage)
        try:
            with SharedEmbeddingCache(name, 256, None, 1, dim=DIM, storage=storage):
                return True
        except ArgumentValueError:
            return False
        finally:
            SharedEmbeddingCache.unlink(name)

    if not memo(("shared-storage", storage), probe):
        raise NotImplementedError(f"SharedEmbeddingCache does not take storage={storage!r}")


def filled(cache: str, storage: str) -> tuple[Any, list[CacheKey]]:
    """The cache of kind `cache` and `storage` holding ENTRIES rows, and its keys."""

    def build() -> tuple[Any, list[CacheKey]]:
        made = make_cache(cache, storage)
        keys = make_keys(ENTRIES)
        made.put_many(keys, memo(("shared-rows",), lambda: rows(ENTRIES)))
        assert len(made) == ENTRIES, (cache, storage, len(made))
        return made, keys

    require_storage(storage)
    return memo(("shared", cache, storage), build)  # type: ignore[no-any-return]


def unlink_segments() -> None:
    """Remove the names of the segments this process made (idempotent)."""
    while SEGMENTS:
        SharedEmbeddingCache.unlink(SEGMENTS.pop())


class SharedGetHit(PerOp):
    """get hit at dim 768: 1000 of the cache's keys in a fixed random order."""

    params = [STORAGES, CACHES]
    param_names = ["storage", "cache"]

    def setup(self, storage: str, cache: str) -> None:
        self.cache, keys = filled(cache, storage)
        self.keys = shuffled(keys[:OPS])

    def teardown(self, storage: str, cache: str) -> None:
        unlink_segments()

    def time_get_hit(self, storage: str, cache: str) -> None:
        get = self.cache.get
        for key in self.keys:
            get(key)


class SharedGetMany:
    """get_many of 1000 random keys of the cache into a new matrix; seconds per row."""

    params = [STORAGES, CACHES]
    param_names = ["storage", "cache"]
    number = 1
    repeat = (10, 60, 2.0)
    warmup_time = 0.05

    def setup(self, storage: str, cache: str) -> None:
        self.cache, keys = filled(cache, storage)
        chosen = np.random.default_rng(SEED + BATCH).choice(ENTRIES, size=BATCH, replace=False)
        self.keys = [keys[int(i)] for i in chosen]
        self.timer = lambda: perf_counter() / BATCH

    def teardown(self, storage: str, cache: str) -> None:
        unlink_segments()

    def time_get_many(self, storage: str, cache: str) -> None:
        self.cache.get_many(self.keys)


class SharedPut(PerOp):
    """put of a key not in the cache (with room), 1000 distinct rows."""

    params = [STORAGES, CACHES]
    param_names = ["storage", "cache"]

    def setup(self, storage: str, cache: str) -> None:
        self.cache, _ = filled(cache, storage)
        self.keys = make_keys(OPS, start=ENTRIES)
        self.rows = list(memo(("shared-put-rows",), lambda: rows(OPS, salt=1)))
        remove = self.cache.remove
        for key in self.keys:
            remove(key)

    def teardown(self, storage: str, cache: str) -> None:
        unlink_segments()

    def time_put(self, storage: str, cache: str) -> None:
        put = self.cache.put
        for key, row in zip(self.keys, self.rows):
            put(key, row)
