"""Leaks: neither memory nor references may grow over many operations on a full
cache (release builds: RSS and tracemalloc instead of sys.gettotalrefcount)."""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from embcache import CacheKey, EmbeddingCache, InvalidVectorError, SyncEmbeddingCache

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:  # pragma: no cover - not Linux
        pytest.skip("/proc/self/statm is not available")


def churn(cache: SyncEmbeddingCache, keys: list[CacheKey], misses: list[CacheKey],
          vectors: list[np.ndarray], ops: int) -> None:
    """ops/4 rounds of put (evicting), get hit, get miss, get maybe-evicted."""
    n_keys = len(keys)
    n_vec = len(vectors)
    put, get = cache.put, cache.get
    for n in range(ops // 4):
        put(keys[n % n_keys], vectors[n % n_vec])
        get(keys[(n * 7) % n_keys])
        get(misses[n % len(misses)])
        get(keys[(n + n_keys // 2) % n_keys])


@pytest.mark.slow
def test_rss_flat_over_a_million_operations() -> None:
    cache = SyncEmbeddingCache(500, max_memory_mb=2.0, dim=64)
    keys = [CacheKey(f"k{i}", "m", None) for i in range(1000)]       # twice the capacity
    misses = [CacheKey(f"miss{i}", "m") for i in range(50)]
    vectors = [np.full(64, i, np.float32) for i in range(16)]
    churn(cache, keys, misses, vectors, 200_000)                     # warm up: full cache
    gc.collect()
    before = rss_bytes()
    churn(cache, keys, misses, vectors, 1_000_000)
    gc.collect()
    growth = rss_bytes() - before
    info = cache.get_cache_info()
    assert info.size == 500 and info.evictions > 200_000
    assert growth < 1 * 2**20, f"RSS grew by {growth} bytes over a million operations"
    cache._check_invariants()


@pytest.mark.slow
def test_rss_flat_with_mixed_dims_and_ttl() -> None:
    clock_now = [0.0]
    cache = SyncEmbeddingCache(300, 2.0, 1.0, clock=lambda: clock_now[0])
    keys = [CacheKey(f"k{i}", "m", str(i % 3)) for i in range(600)]
    misses = [CacheKey("never", "m")]
    vectors = [np.full(d, 1.0, np.float32) for d in (8, 96, 384, 8, 31)]

    def run(ops: int) -> None:
        for step in range(ops // 20_000):
            churn(cache, keys, misses, vectors, 20_000)
            clock_now[0] += 2.5 if step % 2 else 0.5
            len(cache)

    run(200_000)
    gc.collect()
    before = rss_bytes()
    run(600_000)
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 1 * 2**20, f"RSS grew by {growth} bytes"
    info = cache.get_cache_info()
    assert info.expirations > 0 and info.evictions > 0
    cache._check_invariants()


def traced_growth(action: Callable[[], None], warmup: Callable[[], None]) -> int:
    warmup()
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        action()
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


@pytest.mark.slow
def test_tracemalloc_flat_over_operations() -> None:
    cache = SyncEmbeddingCache(200, max_memory_mb=1.0)
    keys = [CacheKey(f"k{i}", "m") for i in range(400)]
    misses = [CacheKey(f"miss{i}", "m") for i in range(10)]
    vectors = [np.full(d, 0.5, np.float32) for d in (16, 48)] + [np.arange(16.0)[::-1]]
    growth = traced_growth(lambda: churn(cache, keys, misses, vectors, 200_000),
                           lambda: churn(cache, keys, misses, vectors, 20_000))
    assert growth < 64 * 1024, f"traced memory grew by {growth} bytes"


@pytest.mark.slow
def test_rejected_calls_do_not_leak() -> None:
    cache = SyncEmbeddingCache(10, dim=4)
    k = CacheKey("k", "m")
    cache.put(k, np.ones(4, np.float32))
    bad_inputs: list[object] = [
        np.array([1.0, np.nan, 1.0, 1.0]), np.ones(5), np.ones((2, 2)), "abcd",
        [True] * 4, [], np.array([1e39, 0, 0, 0]),
    ]

    def hammer() -> None:
        for _ in range(3000):
            for bad in bad_inputs:
                try:
                    cache.put(k, bad)
                except (TypeError, ValueError):
                    pass
            try:
                cache.get("not a key")  # type: ignore[arg-type]
            except TypeError:
                pass
            try:
                CacheKey("", "m")
            except ValueError:
                pass

    growth = traced_growth(hammer, hammer)
    assert growth < 64 * 1024, f"traced memory grew by {growth} bytes"
    assert cache.get(k).tolist() == [1.0] * 4  # type: ignore[union-attr]


@pytest.mark.slow
def test_caches_free_their_memory() -> None:
    def make_and_drop() -> None:
        for _ in range(40):
            c = SyncEmbeddingCache(2000, max_memory_mb=4.0, dim=256)
            for i in range(2000):
                c.put(CacheKey(str(i), "m"), np.full(256, i, np.float32))
            c2 = SyncEmbeddingCache(2000, max_memory_mb=4.0)
            for i in range(1000):
                c2.put(CacheKey(str(i), "m"), np.full(64 + i % 3, i, np.float32))
            c2.clear()
            del c, c2

    make_and_drop()
    gc.collect()
    before = rss_bytes()
    make_and_drop()                       # 40 x (2 MiB + 0.3 MiB) written then dropped
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 8 * 2**20, f"RSS grew by {growth} bytes after dropping 80 caches"


def test_refcounts_unchanged_by_put_and_get() -> None:
    cache = SyncEmbeddingCache(4)
    k = CacheKey("k", "m", "c")
    other = CacheKey("other", "m")
    f32 = np.arange(8, dtype=np.float32)
    f64 = np.arange(8, dtype=np.float64)
    strided = np.arange(16, dtype=np.float32)[::2]
    as_list = [1.0, 2.0, 3.0]
    cache.put(k, f32)
    cache.get(k)
    objects = [k, other, f32, f64, strided, as_list, strided.base]
    before = [sys.getrefcount(o) for o in objects]
    for _ in range(10_000):
        cache.put(k, f32)
        cache.put(k, f64)
        cache.put(other, strided)
        cache.put(other, as_list)
        out = cache.get(k)
        assert out is not None and sys.getrefcount(out) == 2
        cache.get(CacheKey("miss", "m"))
        assert k in cache
        cache.remove(other)
        len(cache)
    del out
    assert [sys.getrefcount(o) for o in objects] == before


def test_refcounts_unchanged_by_errors() -> None:
    cache = SyncEmbeddingCache(4, dim=3)
    k = CacheKey("k", "m")
    bad = np.array([1.0, np.nan, 2.0])
    wrong_dim = np.ones(4)
    objects = [k, bad, wrong_dim]
    before = [sys.getrefcount(o) for o in objects]
    for _ in range(2000):
        with pytest.raises(InvalidVectorError):
            cache.put(k, bad)
        with pytest.raises(InvalidVectorError):
            cache.put(k, wrong_dim)
    assert [sys.getrefcount(o) for o in objects] == before


def test_returned_arrays_own_their_memory() -> None:
    cache = SyncEmbeddingCache(4)
    k = CacheKey("k", "m")
    cache.put(k, np.ones(1000))
    out = cache.get(k)
    assert out is not None
    assert out.base is None and out.flags.owndata
    assert sys.getrefcount(cache) == 2    # the array keeps no reference to the cache


def test_facade_refcounts() -> None:
    import asyncio

    async def main() -> None:
        cache = EmbeddingCache(4)
        k = CacheKey("k", "m")
        v = np.ones(8, np.float32)
        await cache.put(k, v)
        before = (sys.getrefcount(k), sys.getrefcount(v))
        for _ in range(5000):
            await cache.put(k, v)
            await cache.get(k)
            await cache.remove(CacheKey("x", "m"))
        assert (sys.getrefcount(k), sys.getrefcount(v)) == before

    asyncio.run(main())
