"""Row storages: the same cache holding float32, float16, bfloat16 or int8 rows
(``storage=``), at dim 768. tools/storage_speed.py runs these very loops
interleaved and prints the ratios against float32.

params ``storage``: "float32", "float16", "bfloat16", "int8".

* StorageGetHit: ``cache.get(key)`` x 1000, hits in a fixed random order (each
  decodes its row into a new float32 array); seconds per operation.
* StoragePut: ``cache.put(key, row)`` x 1000 of keys not in the cache, 1000
  distinct rows (each encoded); setup removes the keys again, so their rows go
  back on the free lists; seconds per operation.
* StorageGetMany: ``cache.get_many(keys)`` of 1000 random keys; seconds per row.
* StorageMemory: entries one GiB holds (a 64 MiB cache filled until it evicts,
  x 16) and the accounted bytes per entry (``memory_usage_bytes / size``).
* StorageSnapshot: the bytes per entry of a snapshot file of 10,000 entries.

The filled cache (10,000 entries of standard normal rows, seed SEED) is built
once per process per storage (memo) and its pages touched before any timing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from time import perf_counter

import numpy as np

from embcache import SyncEmbeddingCache

from ._util import OPS, SEED, PerOp, make_keys, memo, shuffled

STORAGES = ["float32", "float16", "bfloat16", "int8"]
"""The ``storage`` parameter. Stable: never reorder, only append."""
DIM = 768
ENTRIES = 10_000
BATCH = 1000
FILL_MB = 64


def rows(n: int, salt: int = 0) -> np.ndarray:
    """`n` standard normal float32 rows of DIM (fixed seed + `salt`)."""
    generator = np.random.default_rng(SEED + salt)
    return generator.standard_normal((n, DIM)).astype(np.float32)


def filled(storage: str) -> tuple[SyncEmbeddingCache, list, np.ndarray]:
    """A cache of `storage` holding ENTRIES rows (room for OPS more), its keys
    and the float32 matrix put into it."""

    def build() -> tuple[SyncEmbeddingCache, list, np.ndarray]:
        keys = make_keys(ENTRIES)
        matrix = rows(ENTRIES)
        budget = (ENTRIES + OPS) * (DIM * 4 + 256) / 2**20
        cache = SyncEmbeddingCache(ENTRIES + OPS, None, budget, dim=DIM, storage=storage)
        cache.put_many(keys, matrix)
        return cache, keys, matrix

    return memo(("storage", storage), build)  # type: ignore[no-any-return]


class StorageGetHit(PerOp):
    """get hit at dim 768: 1000 of the cache's keys in a fixed random order."""

    params = [STORAGES]
    param_names = ["storage"]

    def setup(self, storage: str) -> None:
        self.cache, keys, _ = filled(storage)
        self.keys = shuffled(keys[:OPS])

    def time_get_hit(self, storage: str) -> None:
        get = self.cache.get
        for key in self.keys:
            get(key)


class StoragePut(PerOp):
    """put of a key not in the cache (with room), 1000 distinct rows."""

    params = [STORAGES]
    param_names = ["storage"]

    def setup(self, storage: str) -> None:
        self.cache, _, _ = filled(storage)
        self.keys = make_keys(OPS, start=ENTRIES)
        self.rows = list(memo(("storage-put-rows",), lambda: rows(OPS, salt=1)))
        remove = self.cache.remove
        for key in self.keys:
            remove(key)

    def time_put(self, storage: str) -> None:
        put = self.cache.put
        for key, row in zip(self.keys, self.rows):
            put(key, row)


class StorageGetMany:
    """get_many of 1000 random keys of the cache into a new matrix; seconds per row."""

    params = [STORAGES]
    param_names = ["storage"]
    number = 1
    repeat = (10, 60, 2.0)
    warmup_time = 0.05

    def setup(self, storage: str) -> None:
        self.cache, keys, _ = filled(storage)
        chosen = np.random.default_rng(SEED + BATCH).choice(ENTRIES, size=BATCH, replace=False)
        self.keys = [keys[int(i)] for i in chosen]
        self.timer = lambda: perf_counter() / BATCH

    def time_get_many(self, storage: str) -> None:
        self.cache.get_many(self.keys)


def entries_per_gib(storage: str) -> int:
    """How many dim-768 entries a FILL_MB cache of `storage` holds when full, scaled
    to one GiB (x 1024 / FILL_MB)."""
    cache = SyncEmbeddingCache(10**7, None, FILL_MB, dim=DIM, storage=storage)
    chunk = memo(("storage-chunk",), lambda: rows(4096, salt=2))
    start, size = 0, -1
    while len(cache) > size:  # until a chunk's puts evict as many as they add
        size = len(cache)
        cache.put_many(make_keys(len(chunk), start=start), chunk)
        start += len(chunk)
    return len(cache) * (1024 // FILL_MB)


def bytes_per_entry(storage: str) -> float:
    """The cache's accounted bytes per entry (``memory_usage_bytes / size``) at dim 768."""
    cache, _, _ = filled(storage)
    info = cache.get_cache_info()
    return info.memory_usage_bytes / info.size


def snapshot_bytes_per_entry(storage: str) -> float:
    """The size of a snapshot of the filled cache (10,000 entries), per entry."""
    cache, _, _ = filled(storage)
    folder = tempfile.mkdtemp(prefix="embcache-bench-storage-")
    try:
        path = os.path.join(folder, "s.embc")
        written = cache.save(path)
        return os.path.getsize(path) / written
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class StorageMemory:
    """Entries per GiB and accounted bytes per entry, dim 768."""

    params = [STORAGES]
    param_names = ["storage"]

    def track_entries_per_gib(self, storage: str) -> int:
        return entries_per_gib(storage)

    track_entries_per_gib.unit = "entries"  # type: ignore[attr-defined]

    def track_bytes_per_entry(self, storage: str) -> float:
        return bytes_per_entry(storage)

    track_bytes_per_entry.unit = "bytes"  # type: ignore[attr-defined]


class StorageSnapshot:
    """Snapshot file bytes per entry (10,000 entries, dim 768)."""

    params = [STORAGES]
    param_names = ["storage"]
    unit = "bytes"

    def track_snapshot_bytes_per_entry(self, storage: str) -> float:
        return snapshot_bytes_per_entry(storage)
