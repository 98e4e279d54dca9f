"""EmbeddingCache.put / put_many with a tier read the caller's data once: what
is stored in-process and what is written to the tier are the same bytes, and a
rejected call changes neither (whatever a second read of the data would have
given). Against a real redis-server (tests/redis_servers.py) and a dict tier."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import redis_servers
from dict_tier import DictTier
from redis_servers import HOST, RedisServer

from embcache import CacheKey, EmbeddingCache, SyncEmbeddingCache

DIM = 4

# the session's servers (pytest finds fixtures by their name in this module)
redis_server = redis_servers.redis_server
flushed_server = redis_servers.flushed_server


class Shifty:
    """An array-like whose values change from one read to the next."""

    def __init__(self, *reads: list[float]) -> None:
        self.reads = list(reads)
        self.count = 0

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.reads[min(self.count, len(self.reads) - 1)]
        self.count += 1
        return np.array(values, dtype=np.float64)


GOOD = [0.1, 0.2, 0.3, 1 / 3]
NAN = [np.nan, 1.0, 2.0, 3.0]


def key(name: str) -> CacheKey:
    return CacheKey.from_text(name, "m")


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


def test_a_tiered_put_reads_the_vector_once_and_stores_the_same_bytes_in_redis(
    flushed_server: RedisServer,
) -> None:
    pytest.importorskip("redis")
    from redis.asyncio import Redis

    from embcache.redis import RedisTier
    from embcache.tier.wire import encode_rows

    async def main() -> None:
        client = Redis(host=HOST, port=flushed_server.port)
        try:
            tier = RedisTier(client, timeout=5.0)
            cache = EmbeddingCache(100, tier=tier)
            k = key("shifty")
            vector = Shifty(GOOD, NAN)  # a second read would be refused
            await cache.put(k, vector)
            assert vector.count == 1
            row = cache.sync.get(k)
            assert row is not None
            np.testing.assert_array_equal(row, np.array(GOOD, dtype=np.float32))
            raw = await client.get(tier.redis_key(k))
            assert raw == encode_rows(row[None])[0]  # bit for bit the in-process row

            bad = Shifty(NAN, GOOD)  # refused on its one read
            with pytest.raises(ValueError, match="vector"):
                await cache.put(key("bad"), bad)
            assert bad.count == 1
            assert key("bad") not in cache and await client.get(tier.redis_key(key("bad"))) is None
        finally:
            await client.aclose()

    run(main())


@pytest.mark.skipif(
    np.lib.NumpyVersion(np.__version__) < "1.24.0",
    reason="numpy < 1.24 reads a list of array-likes that are not sequences as objects "
    "(with a FutureWarning): no matrix to read once",
)
@pytest.mark.parametrize("reads", [(GOOD, NAN), (NAN, GOOD)])
def test_a_tiered_put_many_reads_the_rows_once(reads: tuple[list[float], list[float]]) -> None:
    async def main() -> None:
        cache = EmbeddingCache(100, tier=DictTier())
        tier = cache.tier
        assert isinstance(tier, DictTier)
        first, second = reads
        rows = [Shifty(first, second), Shifty(GOOD)]
        keys = [key("a"), key("b")]
        if first is NAN:
            with pytest.raises(ValueError):
                await cache.put_many(keys, rows)
            assert len(cache) == 0 and tier.stored == {}
        else:
            await cache.put_many(keys, rows)
            for k in keys:
                row = cache.sync.get(k)
                assert row is not None and tier.stored[k] == row.tobytes()
        assert rows[0].count == 1

    run(main())


@pytest.mark.parametrize(
    "bad",
    [[[1.0] * DIM], [], 5.0, None, "text", [np.nan] * DIM, [1.0] * (DIM - 1), [1j] * DIM],
)
def test_a_tiered_put_refuses_what_put_refuses_with_the_same_error(bad: Any) -> None:
    async def main() -> None:
        plain = SyncEmbeddingCache(100, dim=DIM)
        with pytest.raises(Exception) as expected:
            plain.put(key("x"), bad)
        cache = EmbeddingCache(100, dim=DIM, tier=DictTier())
        with pytest.raises(type(expected.value)) as got:
            await cache.put(key("x"), bad)
        assert str(got.value) == str(expected.value)
        assert "2-D" not in str(got.value)
        tier = cache.tier
        assert isinstance(tier, DictTier)
        assert len(cache) == 0 and tier.stored == {}

    run(main())


def test_lists_of_tensors_are_read_alike_at_any_depth_with_or_without_a_tier() -> None:
    torch = pytest.importorskip("torch")
    vector = [torch.tensor(float(i), requires_grad=True) for i in range(DIM)]
    matrix = [vector, [torch.tensor(2.0, dtype=torch.bfloat16)] * DIM]
    expected = np.array([[0, 1, 2, 3], [2, 2, 2, 2]], dtype=np.float32)

    async def main() -> None:
        cache = EmbeddingCache(100, tier=DictTier())
        tier = cache.tier
        assert isinstance(tier, DictTier)
        await cache.put(key("v"), vector)
        await cache.put_many([key("r0"), key("r1")], matrix)
        for k, want in (
            (key("v"), expected[0]),
            (key("r0"), expected[0]),
            (key("r1"), expected[1]),
        ):
            row = cache.sync.get(k)
            assert row is not None
            np.testing.assert_array_equal(row, want)
            assert tier.stored[k] == row.tobytes()
        # refused alike: a complex tensor in a nested list, tier or not
        bad = [[torch.tensor(1.0)] * (DIM - 1) + [torch.tensor(1j)]]
        plain = SyncEmbeddingCache(100)
        with pytest.raises(TypeError) as expected_error:
            plain.put_many([key("bad")], bad)
        with pytest.raises(type(expected_error.value)):
            await cache.put_many([key("bad")], bad)
        with pytest.raises(type(expected_error.value)):
            await cache.put(key("bad"), bad[0])
        assert key("bad") not in cache and key("bad") not in tier.stored

    sync = SyncEmbeddingCache(100)
    sync.put_many([key("r0"), key("r1")], matrix)
    np.testing.assert_array_equal(sync.get_many([key("r0"), key("r1")])[0], expected)
    run(main())
