"""The basic operations: put over embedding sizes, get hit and miss, and
concurrent access from 1-16 asyncio tasks or OS threads.

Timing (see _util.py): CachePut and CacheGet time a loop of 1000 operations per
call and report seconds **per operation** (``timer = per_op_timer``); setup runs
before every call and is never timed. ConcurrentAccess reports seconds per
**batch** (all workers' 100 operations each).

* Keys and vectors are the shared workloads (embcache.cli.workloads), built
  in setup, not inside the timed loop; CacheKey creation is timed on its own in
  bench_core.KeyCreation.
* The synchronous core is timed (running an event loop per operation would time
  the loop, not the cache); the cost an ``await`` adds is bench_core.AwaitOverhead.
* The cache holds 10k entries with a 1 h TTL and a 500 MB budget, ``dim`` fixed;
  DefaultCachePut and DefaultCacheGet time the same loops on the cache as users
  build it, ``dim`` not given (the first put fixes it).
* In ConcurrentAccess every get reads the key the same worker has just put (a hit).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor, wait

from embcache import EmbeddingCache, SyncEmbeddingCache

from ._util import OPS, PerOp, make_keys, make_vector, memo, shuffled


def _basic_cache(dim, cls=None, fixed=True):
    """A cache (`cls`, default SyncEmbeddingCache) of 10k entries, 1 hour TTL,
    500 MB, dimension `dim` fixed (or, when not `fixed`, left to the first put)."""
    return (cls or SyncEmbeddingCache)(10_000, 3600, 500, dim=dim if fixed else None)


class CachePut(PerOp):
    """cache_put/embedding_size: put of a key not in the cache, into a cache with
    room. Timed: ``cache.put(key, vector)`` x 1000, distinct keys, one vector
    (put copies it). Setup (untimed) removes the 1000 keys again, so their rows
    and slots go back on the free lists and the next call puts new keys into
    memory that is already faulted in (``clear()`` is not used: it may hand the
    slab's pages back to the OS, and the next puts would time page faults)."""

    params = [[128, 384, 768, 1536]]
    param_names = ["embedding_size"]
    fixed = True

    def setup(self, dim):
        def build():
            cache = _basic_cache(dim, fixed=self.fixed)
            keys = make_keys(OPS)
            vector = make_vector(dim)
            for key in keys:  # fault in the slab rows and index cells
                cache.put(key, vector)
            return cache, keys, vector

        self.cache, self.keys, self.vector = memo((type(self).__name__, dim), build)
        remove = self.cache.remove
        for key in self.keys:
            remove(key)

    def time_put(self, dim):
        put, vector = self.cache.put, self.vector
        for key in self.keys:
            put(key, vector)


class CacheGet(PerOp):
    """cache_get/hit and cache_get/miss: 1000 keys pre-populated at dim 768; hit
    looks all of them up in a fixed random order, miss looks up 1000 keys that
    were never inserted (ids 10000..), also shuffled. Each hit
    returns a new float32 array, dropped at once."""

    params = [["hit", "miss"]]
    param_names = ["lookup"]
    fixed = True

    def setup(self, lookup):
        def build():
            cache = _basic_cache(768, fixed=self.fixed)
            vector = make_vector(768)
            for key in make_keys(OPS):
                cache.put(key, vector)
            return (
                cache,
                {"hit": shuffled(make_keys(OPS)), "miss": shuffled(make_keys(OPS, start=10_000))},
            )

        self.cache, keys = memo(type(self).__name__, build)
        self.keys = keys[lookup]

    def time_get(self, lookup):
        get = self.cache.get
        for key in self.keys:
            get(key)


class DefaultCachePut(CachePut):
    """CachePut on the default cache (``dim`` not given)."""

    params = [[768]]
    fixed = False


class DefaultCacheGet(CacheGet):
    """CacheGet on the default cache (``dim`` not given)."""

    fixed = False


async def _async_worker(cache, keys, vector):
    for i, key in enumerate(keys):
        if i % 2 == 0:
            await cache.put(key, vector)
        else:
            await cache.get(keys[i - 1])


def _thread_worker(cache, keys, vector):
    put, get = cache.put, cache.get
    for i, key in enumerate(keys):
        if i % 2 == 0:
            put(key, vector)
        else:
            get(keys[i - 1])


class ConcurrentAccess:
    """concurrent_access/threads: `workers` workers, 100 operations each (even:
    put a 768-d vector, odd: get the key just put), all sharing one cache.

    mode=asyncio: one EmbeddingCache, `workers` tasks created per call and
    gathered on an event loop made once in setup.
    mode=threads: one SyncEmbeddingCache, `workers` jobs submitted per call to a
    ThreadPoolExecutor of `workers` threads started (and warmed) in setup.

    Reported: seconds per batch (workers x 100 operations), not per operation.
    Keys are workload keys number worker * 1000 + i; after the first batch the
    puts overwrite."""

    params = [["asyncio", "threads"], [1, 2, 4, 8, 16]]
    param_names = ["mode", "workers"]
    number = 1
    repeat = (10, 40, 2.0)
    warmup_time = 0.05

    def setup(self, mode, workers):
        def build():
            keys = [make_keys(100, start=w * 1000) for w in range(workers)]
            vector = make_vector(768)
            if mode == "asyncio":
                cache = _basic_cache(768, EmbeddingCache)
                return cache, keys, vector, asyncio.new_event_loop()
            cache = _basic_cache(768)
            pool = ThreadPoolExecutor(max_workers=workers)
            wait([pool.submit(_thread_worker, cache, k, vector) for k in keys])
            return cache, keys, vector, pool

        self.cache, self.keys, self.vector, self.runner = memo(
            ("ConcurrentAccess", mode, workers), build
        )

    async def _batch(self):
        await asyncio.gather(*[_async_worker(self.cache, k, self.vector) for k in self.keys])

    def time_concurrent(self, mode, workers):
        if mode == "asyncio":
            self.runner.run_until_complete(self._batch())
        else:
            submit, cache, vector = self.runner.submit, self.cache, self.vector
            wait([submit(_thread_worker, cache, k, vector) for k in self.keys])
