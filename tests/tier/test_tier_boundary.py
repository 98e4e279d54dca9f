"""A tiered EmbeddingCache checks each input once, at its boundary: keys given as
any iterable (list, tuple, iterator, generator, dict keys) behave as they do
without a tier, for get_many, put_many and get_or_compute, in-process and in
Redis alike; an array-like read differently on each read lands identically
in-process and in Redis; a rejected value is stored nowhere. Against a real
redis-server (tests/redis_servers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import redis_servers
from redis_servers import HOST, RedisServer

from embcache import CacheKey, EmbeddingCache

pytest.importorskip("redis")
from redis.asyncio import Redis  # noqa: E402

from embcache.redis import RedisTier  # noqa: E402
from embcache.tier.wire import encode_rows  # noqa: E402

redis_server = redis_servers.redis_server
flushed_server = redis_servers.flushed_server

DIM = 4
KEYS = [CacheKey(f"k{i}", "m") for i in range(6)]
ROWS = np.arange(6 * DIM, dtype=np.float32).reshape(6, DIM) / 7


def as_generator(keys: list[CacheKey]) -> Iterable[CacheKey]:
    return (k for k in keys)


KINDS: dict[str, Callable[[list[CacheKey]], Iterable[CacheKey]]] = {
    "list": list,
    "tuple": tuple,
    "iterator": iter,
    "generator": as_generator,
    "dict keys": lambda keys: dict.fromkeys(keys).keys(),
}


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


@asynccontextmanager
async def redis_tier(server: RedisServer) -> AsyncIterator[RedisTier]:
    client = Redis(host=HOST, port=server.port)
    try:
        yield RedisTier(client, timeout=5.0)
    finally:
        await client.aclose()


async def in_redis(tier: RedisTier, keys: list[CacheKey]) -> list[bytes | None]:
    return list(await tier.client.mget([tier.redis_key(k) for k in keys]))


@pytest.mark.parametrize("kind", list(KINDS))
def test_put_many_writes_every_key_to_redis_whatever_iterable_holds_them(
    flushed_server: RedisServer, kind: str
) -> None:
    async def main() -> None:
        async with redis_tier(flushed_server) as tier:
            cache = EmbeddingCache(100, dim=DIM, tier=tier)
            await cache.put_many(KINDS[kind](KEYS), ROWS)  # type: ignore[arg-type]
            assert len(cache) == len(KEYS)
            assert await in_redis(tier, KEYS) == encode_rows(ROWS)

    run(main())


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dim", [DIM, None])
def test_get_many_reads_through_whatever_iterable_holds_the_keys(
    flushed_server: RedisServer, kind: str, dim: int | None
) -> None:
    async def main() -> None:
        async with redis_tier(flushed_server) as tier:
            writer = EmbeddingCache(100, dim=DIM, tier=tier)
            await writer.put_many(KEYS[:4], ROWS[:4])
            plain = EmbeddingCache(100, dim=dim)
            plain.sync.put_many(KEYS[:4], ROWS[:4])
            # one in-process hit, three keys only Redis has, two keys nobody has
            cache = EmbeddingCache(100, dim=dim, tier=tier)
            cache.sync.put(KEYS[0], ROWS[0])
            want = plain.sync.get_many(KEYS)
            got = await cache.get_many(KINDS[kind](KEYS))  # type: ignore[arg-type]
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            # every key missed in-process (the tier's answer is the whole answer)
            fresh = EmbeddingCache(100, dim=dim, tier=tier)
            got = await fresh.get_many(KINDS[kind](KEYS[1:4]))  # type: ignore[arg-type]
            np.testing.assert_array_equal(got[0], ROWS[1:4])
            assert got[1].all() and len(fresh) == 3

    run(main())


@pytest.mark.parametrize("kind", list(KINDS))
def test_get_or_compute_takes_whatever_iterable_holds_the_keys(
    flushed_server: RedisServer, kind: str
) -> None:
    async def main() -> None:
        async with redis_tier(flushed_server) as tier:
            await EmbeddingCache(100, tier=tier).put_many(KEYS[:2], ROWS[:2])
            asked: list[list[CacheKey]] = []

            def compute(missing: list[CacheKey]) -> np.ndarray:
                asked.append(missing)
                return ROWS[[KEYS.index(k) for k in missing]]

            cache = EmbeddingCache(100, dim=DIM, tier=tier)
            got = await cache.get_or_compute(KINDS[kind](KEYS), compute)  # type: ignore[arg-type]
            np.testing.assert_array_equal(got, ROWS)
            assert asked == [KEYS[2:]]  # Redis had the first two
            assert await in_redis(tier, KEYS) == encode_rows(ROWS)

    run(main())


def test_a_tiered_get_many_with_duplicates_asks_each_distinct_miss_once(
    flushed_server: RedisServer,
) -> None:
    async def main() -> None:
        async with redis_tier(flushed_server) as tier:
            await EmbeddingCache(100, tier=tier).put_many(KEYS[:3], ROWS[:3])
            cache = EmbeddingCache(100, tier=tier)
            cache.sync.put(KEYS[1], ROWS[1])
            keys = [KEYS[0], KEYS[1], KEYS[0], KEYS[5], KEYS[2], KEYS[5], KEYS[1]]
            before = tier.get_tier_info()
            matrix, found = await cache.get_many(keys)
            after = tier.get_tier_info()
            assert found.tolist() == [True, True, True, False, True, False, True]
            want = ROWS[[0, 1, 0, 0, 2, 0, 1]]
            want[[3, 5]] = 0.0
            np.testing.assert_array_equal(matrix, want)
            # the distinct misses k0, k5, k2: three keys asked of Redis
            assert (after.hits - before.hits, after.misses - before.misses) == (2, 1)

    run(main())


class Shifty:
    """An array-like whose values change from one read to the next."""

    def __init__(self, *reads: Any) -> None:
        self.reads = list(reads)
        self.count = 0

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.reads[min(self.count, len(self.reads) - 1)]
        self.count += 1
        return np.array(values, dtype=np.float64)


def test_a_tiered_put_many_reads_an_unstable_matrix_once_into_both_tiers(
    flushed_server: RedisServer,
) -> None:
    async def main() -> None:
        async with redis_tier(flushed_server) as tier:
            cache = EmbeddingCache(100, tier=tier)
            first = ROWS[:2].astype(np.float64) + 0.5
            matrix = Shifty(first, first * 3)  # a second read gives other values
            await cache.put_many(KEYS[:2], matrix)
            assert matrix.count == 1
            kept, found = cache.sync.get_many(KEYS[:2])
            assert found.all()
            np.testing.assert_array_equal(kept, first.astype(np.float32))
            assert await in_redis(tier, KEYS[:2]) == encode_rows(kept)  # bit for bit

            bad = first.copy()
            bad[1, 2] = np.nan
            rejected = Shifty(bad, first)  # refused on its one read; a second would pass
            with pytest.raises(ValueError, match=r"matrix\[1"):
                await cache.put_many(KEYS[2:4], rejected)
            assert rejected.count == 1
            assert KEYS[2] not in cache and KEYS[3] not in cache
            assert await in_redis(tier, KEYS[2:4]) == [None, None]

    run(main())


def test_a_rejected_put_many_with_bad_keys_is_stored_nowhere(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with redis_tier(flushed_server) as tier:
            cache = EmbeddingCache(100, tier=tier)
            with pytest.raises(TypeError, match=r"keys\[1\]"):
                await cache.put_many(iter([KEYS[0], "k1"]), ROWS[:2])  # type: ignore[list-item]
            assert len(cache) == 0 and await in_redis(tier, KEYS[:1]) == [None]

    run(main())


def test_the_tier_get_many_answers_as_the_cache_get_many(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with redis_tier(flushed_server) as tier:
            await tier.put_many(KEYS[:3], ROWS[:3])
            keys = [KEYS[4], KEYS[0], KEYS[2], KEYS[0]]
            for dim in (DIM, None):
                matrix, found = await tier.get_many(keys, dim=dim)
                assert found.tolist() == [False, True, True, True]
                np.testing.assert_array_equal(matrix, [[0] * DIM, ROWS[0], ROWS[2], ROWS[0]])
            out = np.full((4, DIM), 9.0, dtype=np.float32)  # not zero-filled: misses zeroed
            matrix, found = await tier.get_many(keys, out=out)
            assert matrix is out and not out[0].any() and found.sum() == 3
            matrix, found = await tier.get_many(KEYS[4:], dim=None)  # nothing fixes dim
            assert matrix.shape == (2, 0) and not found.any()
            assert await tier.remove_many(KEYS[:4]) == 3

    run(main())


def test_redis_tier_takes_timeout_in_seconds_and_names_the_old_keyword() -> None:
    async def connect() -> Redis:  # on a running loop (Python 3.9's asyncio locks need one)
        return Redis(host=HOST, port=1)

    client = asyncio.run(connect())
    tier = RedisTier(client, timeout=0.5)
    assert tier.timeout == 0.5 and "timeout=0.5," in repr(tier)
    with pytest.raises(TypeError, match=r"timeout= \(seconds\) instead of timeout_seconds="):
        RedisTier(client, timeout_seconds=0.5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'timeot'"):
        RedisTier(client, timeot=0.5)  # type: ignore[call-arg]
