"""Acceptance tests through the asyncio facade: vectors of the common embedding
sizes round-trip, the memory estimate is accurate (and exact), and put/get
throughput and a 10k-entry dataset clear the floors of ``embcache check``'s
criteria (generous floors, nothing tuned to one machine). Keys and vectors are
the shared workloads of embcache.cli.workloads."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, EmbeddingCache
from embcache.cli.workloads import workload_key, workload_vector


def test_vectors_of_common_sizes_round_trip() -> None:
    async def main() -> None:
        cache = EmbeddingCache(10000, 3600, 500)
        for size in (128, 384, 768, 1536):
            emb = workload_vector(size).tolist()  # a list of floats: put converts it
            await cache.put(workload_key(size), emb)
            out = await cache.get(workload_key(size))
            assert out is not None and out.shape == (size,)
            np.testing.assert_array_equal(out, workload_vector(size))

    asyncio.run(main())


def test_memory_usage_accuracy() -> None:
    async def main() -> None:
        cache = EmbeddingCache(1000, 3600, 100)  # 100MB limit
        embedding_size = 768
        num_embeddings = 100
        for i in range(num_embeddings):
            key = CacheKey(f"memory_test_{i}", "v1", None)
            await cache.put(key, [float(i)] * embedding_size)

        info = await cache.get_cache_info()
        expected_memory_mb = (num_embeddings * embedding_size * 4) / (1024 * 1024)
        assert expected_memory_mb <= info.memory_usage_mb <= expected_memory_mb * 2, (
            f"memory usage estimation is significantly off: {info.memory_usage_mb} "
            f"vs expected {expected_memory_mb}"
        )
        # and exactly: payload plus the documented per-entry metadata
        assert info.memory_usage_bytes == num_embeddings * (
            embedding_size * 4 + ENTRY_OVERHEAD_BYTES
        )
        assert info.memory_usage_mb == info.memory_usage_bytes / 2**20
        assert info.size == num_embeddings
        assert info.memory_usage_bytes <= info.memory_budget_bytes

    asyncio.run(main())


def test_performance_regression() -> None:
    async def main() -> None:
        cache = EmbeddingCache(10000, 3600, 200)
        embedding = [0.5] * 768

        for i in range(1000):  # warm up
            await cache.put(workload_key(i), embedding)

        start = time.perf_counter()
        for i in range(1000, 2000):
            await cache.put(workload_key(i), embedding)
        put_per_sec = 1000.0 / (time.perf_counter() - start)
        assert put_per_sec > 1000.0, f"put performance below 1000 ops/sec: {put_per_sec:.0f}"

        start = time.perf_counter()
        for i in range(1000):
            result = await cache.get(workload_key(i))
            assert result is not None
        get_per_sec = 1000.0 / (time.perf_counter() - start)
        assert get_per_sec > 5000.0, f"get performance below 5000 ops/sec: {get_per_sec:.0f}"

    asyncio.run(main())


@pytest.mark.slow
def test_large_dataset_scalability() -> None:
    async def main() -> None:
        cache = EmbeddingCache(50000, 3600, 1000)
        embedding = [0.1] * 768

        start = time.perf_counter()
        for i in range(10000):
            await cache.put(workload_key(i), embedding)
        insert_time = time.perf_counter() - start
        assert insert_time < 30.0, f"insert time too slow: {insert_time:.2f}s"

        start = time.perf_counter()
        for i in range(1000):
            result = await cache.get(workload_key(i * 10))
            assert result is not None
        search_time = time.perf_counter() - start
        assert search_time < 0.5, f"search time too slow: {search_time:.3f}s"

        info = await cache.get_cache_info()
        assert info.size == 10000
        assert info.hit_rate > 0.9
        assert info.evictions == 0

    asyncio.run(main())
