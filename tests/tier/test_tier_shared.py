"""A SharedEmbeddingCache under a RedisTier, through the facade
(``EmbeddingCache.wrap(shared, tier=tier)``): the segment is the first tier of
every process of the host, Redis the second (for other hosts)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import redis_servers
from redis_servers import HOST, RedisServer
from segment_names import segment_name  # noqa: F401 (a fixture)

from embcache import CacheKey, EmbeddingCache, SharedEmbeddingCache

pytest.importorskip("redis", reason='redis-py is not installed (pip install ".[redis]")')
from redis.asyncio import Redis  # noqa: E402

from embcache.redis import RedisTier  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

redis_server = redis_servers.redis_server
flushed_server = redis_servers.flushed_server

DIM = 8


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


@asynccontextmanager
async def tier_on(server: RedisServer, **kw: Any) -> AsyncIterator[RedisTier]:
    client = Redis(host=HOST, port=server.port)
    try:
        yield RedisTier(client, timeout=5.0, **kw)
    finally:
        await client.aclose()


def keys(n: int) -> list[CacheKey]:
    return [CacheKey(f"t{i}", "m") for i in range(n)]


def test_a_shared_cache_under_a_redis_tier(flushed_server: RedisServer, segment_name: str) -> None:  # noqa: F811
    data = np.random.default_rng(3).standard_normal((6, DIM)).astype(np.float32)

    async def main() -> None:
        with SharedEmbeddingCache(segment_name, 100, None, 1, dim=DIM) as shared:
            async with tier_on(flushed_server) as tier:
                cache = EmbeddingCache.wrap(shared, tier=tier)
                assert cache.tier is tier and cache.sync is shared
                await cache.put_many(keys(4), data[:4])  # both tiers
                await cache.put(keys(6)[4], data[4])
                shared.clear()  # the segment forgets; Redis keeps them
                got = await cache.get(keys(1)[0])
                np.testing.assert_array_equal(got, data[0])
                assert keys(1)[0] in shared  # read through and kept in the segment
                matrix, found = await cache.get_many(keys(6))
                assert found.tolist() == [True] * 5 + [False]
                np.testing.assert_array_equal(matrix[:5], data[:5])
                assert len(shared) == 5
                calls: list[list[CacheKey]] = []

                def compute(missing: list[CacheKey]) -> np.ndarray:
                    calls.append(missing)
                    return data[5:6]

                shared.clear()
                out = await cache.get_or_compute(keys(6), compute)
                assert calls == [keys(6)[5:]]  # the rest came from Redis
                np.testing.assert_array_equal(out, data)
                info = await cache.get_cache_info()
                assert info.tier_hits >= 6 and info.size == 6
                # a second handle on the segment (as another process has) sees it all
                with SharedEmbeddingCache.attach(segment_name) as other:
                    np.testing.assert_array_equal(other.get_many(keys(6))[0], data)
                assert await cache.remove(keys(1)[0]) is True
                assert keys(1)[0] not in shared
                assert (await tier.get_many(keys(1), dim=DIM))[1].tolist() == [False]

    run(main())


def test_a_tier_without_a_storage_takes_the_shared_cache_s(
    flushed_server: RedisServer,
    segment_name: str,  # noqa: F811
) -> None:
    async def main() -> None:
        with SharedEmbeddingCache(segment_name, 100, None, 1, dim=DIM) as shared:
            async with tier_on(flushed_server) as tier:
                assert tier.storage is None
                EmbeddingCache.wrap(shared, tier=tier)
                assert tier.storage == shared.storage == "float32"

    run(main())
