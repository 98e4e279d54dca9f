"""Batch operations: get_many / put_many against a peer's loop plus np.stack.

params ``impl`` x ``batch`` x ``dim``:

* ``impl``: "embcache" (SyncEmbeddingCache(..., dim=dim).get_many / put_many,
  loops in C), "embcache-out" (get_many into a preallocated ``out=`` matrix: no
  allocation), "embcache-default" (as "embcache", on the cache as users build
  it, ``dim`` not given),
  or a peer from embcache/cli/peers.py doing the same batch with a Python loop:
  a lookup is ``np.stack([m.get(k).copy() for k in keys])`` (``get_matrix`` of
  embcache.cli.peers.LOOPS, as in ``embcache check --compare``), a store is
  ``for k, row in zip(keys, matrix): m[k] = row.copy()``. A peer that is not
  installed is skipped (NotImplementedError in setup).
* ``batch``: keys per call, 1 to 10,000.
* ``dim``: 384 and 1536.

Timing: one call per timed sample; ``timer`` divides by the batch size, so asv
reports **seconds per row**. The cache holds 20,000 entries (30 to 120 MB of
vectors); each batch is a fixed random sample of them, so rows are gathered
from all over the slab. Built once per process; pages touched in setup.
"""

from __future__ import annotations

from time import perf_counter

import numpy as np

from embcache import SyncEmbeddingCache

from ._util import LOOPS, SEED, memo, peer_mapping, require_peer, sha_key

ENTRIES = 20_000
IMPLS = ["embcache", "embcache-out", "cachebox", "lru-dict", "cachetools", "embcache-default"]
"""Stable: never reorder, only append (asv keys results by parameter values)."""
BATCHES = [1, 10, 100, 1000, 10_000]
DIMS = [384, 1536]


def _filled(impl: str, dim: int) -> tuple[object, list, np.ndarray]:
    """A cache of ENTRIES random vectors of `dim`, with its keys and matrix."""

    def build() -> tuple[object, list, np.ndarray]:
        keys = [sha_key(i) for i in range(ENTRIES)]
        matrix = np.random.default_rng(SEED).standard_normal((ENTRIES, dim)).astype(np.float32)
        if impl.startswith("embcache"):
            budget = ENTRIES * (dim * 4 + 128) / 2**20
            cache: object = SyncEmbeddingCache(
                ENTRIES, None, budget, dim=None if impl == "embcache-default" else dim
            )
            cache.put_many(keys, matrix)  # type: ignore[attr-defined]
        else:
            cache = peer_mapping(impl, ENTRIES)
            for k, row in zip(keys, matrix):
                cache[k] = row.copy()  # type: ignore[index]
        return cache, keys, matrix

    return memo(("batch", impl, dim), build)  # type: ignore[no-any-return]


class _Batch:
    params = (IMPLS, BATCHES, DIMS)
    param_names = ["impl", "batch", "dim"]
    number = 1
    repeat = (10, 60, 2.0)
    warmup_time = 0.05
    timeout = 300

    def setup(self, impl: str, batch: int, dim: int) -> None:
        require_peer("embcache" if impl.startswith("embcache") else impl)
        self.cache, keys, matrix = _filled(impl, dim)
        rows = np.random.default_rng(SEED + batch).choice(ENTRIES, size=batch, replace=False)
        self.keys = [keys[int(i)] for i in rows]
        self.rows = np.ascontiguousarray(matrix[rows])
        self.out = np.empty((batch, dim), dtype=np.float32)
        self.out.fill(0.0)  # touch the pages
        self.timer = lambda: perf_counter() / batch


class GetMany(_Batch):
    """Fetch `batch` random keys into one (batch, dim) float32 matrix."""

    def time_get_many(self, impl: str, batch: int, dim: int) -> None:
        if impl == "embcache-out":
            self.cache.get_many(self.keys, self.out)  # type: ignore[attr-defined]
        else:
            loops = LOOPS["embcache" if impl.startswith("embcache") else impl]
            loops.get_matrix(self.cache, self.keys)


class PutMany(_Batch):
    """Store `batch` rows of a (batch, dim) matrix under existing keys (overwrite
    in place: the cache stays full and the timed work is the row copies)."""

    def setup(self, impl: str, batch: int, dim: int) -> None:
        if impl == "embcache-out":
            raise NotImplementedError("put_many takes no out= buffer")
        super().setup(impl, batch, dim)

    def time_put_many(self, impl: str, batch: int, dim: int) -> None:
        if impl.startswith("embcache"):
            self.cache.put_many(self.keys, self.rows)  # type: ignore[attr-defined]
        else:
            cache = self.cache
            for k, row in zip(self.keys, self.rows):
                cache[k] = row.copy()  # type: ignore[index]
