"""The Redis tier's compact values against real servers (tests/redis_servers.py):
a tier writes rows in its storage (given, or its cache's), every reader decodes
every encoding (the C reader on one server, redis-py and the Python decoder on a
cluster or a single-connection client), corrupt compact values are counted
misses, and rows a narrower tier storage cannot hold stay in-process only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import redis_servers
from redis_servers import HOST, RedisCluster, RedisServer

from embcache import ArgumentTypeError, ArgumentValueError, CacheKey, EmbeddingCache
from embcache._core import decode_rows, encode_rows, row_bytes

pytest.importorskip("redis", reason='redis-py is not installed (pip install ".[redis]")')
from redis.asyncio import Redis  # noqa: E402
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster  # noqa: E402

from embcache.redis import RedisTier  # noqa: E402
from embcache.tier import wire  # noqa: E402

redis_server = redis_servers.redis_server
redis_cluster = redis_servers.redis_cluster
flushed_server = redis_servers.flushed_server
flushed_cluster = redis_servers.flushed_cluster

STORAGES = ("float32", "float16", "bfloat16", "int8")
DIM = 24


@asynccontextmanager
async def tier_on(server: RedisServer, **kw: Any) -> AsyncIterator[RedisTier]:
    kw.setdefault("timeout", 5.0)
    single = kw.pop("single_connection_client", False)
    client = Redis(host=HOST, port=server.port, single_connection_client=single)
    try:
        yield RedisTier(client, **kw)
    finally:
        await client.aclose()


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


def keys_of(n: int, model: str = "m") -> list[CacheKey]:
    return [CacheKey(f"text-{i}", model) for i in range(n)]


def rows_of(n: int, dim: int = DIM, seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def stored(rows: npt.NDArray[np.float32], storage: str) -> npt.NDArray[np.float32]:
    return decode_rows(encode_rows(rows, storage), storage, rows.shape[1])


@pytest.mark.parametrize("writer", STORAGES)
def test_every_reader_decodes_every_writers_encoding(
    flushed_server: RedisServer, writer: str
) -> None:
    async def main() -> None:
        keys, rows = keys_of(40), rows_of(40)
        async with tier_on(flushed_server, storage=writer) as tier:
            await tier.put_many(keys, rows)
            value = await tier.client.get(tier.redis_key(keys[7]))
            assert isinstance(value, bytes)
            assert value[5] == wire.DTYPES[writer]
            assert len(value) == 12 + row_bytes(writer, DIM)
            assert value[12:] == encode_rows(rows[7:8], writer).tobytes()
        want = stored(rows, writer)
        for reader in (None, *STORAGES):
            async with tier_on(flushed_server, storage=reader) as tier:
                cache = EmbeddingCache(1000, None, 16, dim=DIM, tier=tier)
                matrix, found = await cache.get_many(keys)
                assert found.all() and np.array_equal(matrix, want), reader
                # kept in-process: the next read is a local hit with the same rows
                assert np.array_equal(cache.sync.get_many(keys)[0], want)
                loose = EmbeddingCache(1000, None, 16, tier=tier)  # no dim: the header's
                got = await loose.get(keys[3])
                assert got is not None and np.array_equal(got, want[3])
                assert (await cache.get_cache_info()).tier_errors == 0

    run(main())


def test_a_cache_writes_through_in_its_tiers_storage(flushed_server: RedisServer) -> None:
    async def main() -> None:
        keys, rows = keys_of(30), rows_of(30, seed=1)
        async with tier_on(flushed_server, storage="bfloat16") as tier:
            cache = EmbeddingCache(1000, None, 16, dim=DIM, tier=tier)
            await cache.put_many(keys[:20], rows[:20])
            await cache.put(keys[20], rows[20])
            got = await cache.get_or_compute(keys[21:], lambda ks: rows[21 : 21 + len(ks)])
            assert got.shape == (9, DIM)
            values = await tier.client.mget([tier.redis_key(k) for k in keys])
            assert all(v is not None and v[5] == wire.DTYPES["bfloat16"] for v in values)
            fresh = EmbeddingCache(1000, None, 16, dim=DIM, tier=tier)
            matrix, found = await fresh.get_many(keys)
            assert found.all() and np.array_equal(matrix, stored(rows, "bfloat16"))

    run(main())


def test_a_large_compact_batch_read_in_chunks(flushed_server: RedisServer) -> None:
    """2000 rows of dim 768: payloads split over the reads of the socket (the C
    reader's scratch row) and more than one Redis call per batch."""

    async def main() -> None:
        keys, rows = keys_of(2000), rows_of(2000, 768, seed=2)
        for storage in ("float16", "int8"):
            async with tier_on(flushed_server, storage=storage) as tier:
                await tier.put_many(keys, rows)
                for dim in (768, None):
                    matrix, found = await tier.get_many(keys, dim=dim)
                    assert found.all() and np.array_equal(matrix, stored(rows, storage))
                out = np.ones((2000, 768), dtype=np.float32)
                matrix, found = await tier.get_many(keys, out=out)
                assert matrix is out and np.array_equal(out, stored(rows, storage))

    run(main())


def test_a_single_connection_client_reads_compact_values(flushed_server: RedisServer) -> None:
    """A client the direct reader cannot use: redis-py's mget and the Python decoder."""

    async def main() -> None:
        keys, rows = keys_of(10), rows_of(10, seed=3)
        async with tier_on(flushed_server, storage="int8") as tier:
            await tier.put_many(keys, rows)
        async with tier_on(flushed_server, single_connection_client=True) as tier:
            matrix, found = await tier.get_many(keys + keys_of(2, "other"))
            assert found.tolist() == [True] * 10 + [False] * 2
            assert np.array_equal(matrix[:10], stored(rows, "int8"))

    run(main())


def test_corrupt_compact_values_are_counted_misses(flushed_server: RedisServer) -> None:
    async def main() -> None:
        keys, rows = keys_of(8), rows_of(8, seed=4)
        async with tier_on(flushed_server, storage="float16") as tier:
            await tier.put_many(keys, rows)
            f16 = encode_rows(rows[:1], "float16").tobytes()
            i8 = encode_rows(rows[:1], "int8").tobytes()
            corrupt = [
                wire.header_for(DIM, "float16")[:5] + b"\x09" + wire.header_for(DIM)[6:] + f16,
                wire.header_for(DIM, "int8") + f16,  # the length of another encoding
                wire.header_for(DIM, "float16") + f16[:-2] + b"\x00\x7c",  # infinity
                wire.header_for(DIM, "int8") + np.float32(-2.0).tobytes() + i8[4:],
                wire.header_for(DIM + 1, "float16") + f16,  # the dim lies
            ]
            for k, value in zip(keys[::2], corrupt):
                await tier.client.set(tier.redis_key(k), value)
            before = tier.get_tier_info().errors
            for dim in (DIM, None):
                matrix, found = await tier.get_many(keys, dim=dim)
                assert found.tolist() == [False, True] * 4
                assert np.array_equal(matrix[1::2], stored(rows, "float16")[1::2])
                assert not matrix[::2].any()
            assert tier.get_tier_info().errors == before + 8
            # a cache recomputes them, and its write replaces the corrupt values
            cache = EmbeddingCache(1000, None, 16, dim=DIM, tier=tier)
            got = await cache.get_or_compute(keys, lambda ks: rows[: len(ks)] * 0 + 1)
            assert np.array_equal(got[1::2], stored(rows, "float16")[1::2])
            matrix, found = await tier.get_many(keys)
            assert found.all()

    run(main())


def test_rows_a_narrower_tier_storage_cannot_hold_stay_in_process(
    flushed_server: RedisServer,
) -> None:
    async def main() -> None:
        keys, rows = keys_of(4), rows_of(4, seed=5)
        rows[2, 5] = 1e6  # a float32 cache holds it; float16 cannot
        async with tier_on(flushed_server, storage="float16") as tier:
            cache = EmbeddingCache(1000, None, 16, dim=DIM, tier=tier)
            await cache.put_many(keys, rows)
            matrix, found = cache.sync.get_many(keys)
            assert found.all() and np.array_equal(matrix, rows)
            assert tier.get_tier_info().errors == 1
            matrix, found = await tier.get_many(keys)
            assert found.tolist() == [True, True, False, True]
            only = [keys[2]]
            await tier.put_many(only, rows[2:3])
            assert tier.get_tier_info().errors == 2
            assert (await tier.client.exists(tier.redis_key(keys[2]))) == 0

    run(main())


def test_a_cluster_reads_and_writes_compact_values(flushed_cluster: RedisCluster) -> None:
    async def main() -> None:
        client = AsyncRedisCluster(host=HOST, port=flushed_cluster.nodes[0].port)
        try:
            keys, rows = keys_of(60), rows_of(60, seed=6)
            tier = RedisTier(client, storage="int8", timeout=5.0)
            await tier.put_many(keys[:30], rows[:30])
            await RedisTier(client, storage="bfloat16", timeout=5.0).put_many(keys[30:], rows[30:])
            matrix, found = await RedisTier(client, timeout=5.0).get_many(keys)
            assert found.all()
            assert np.array_equal(matrix[:30], stored(rows[:30], "int8"))
            assert np.array_equal(matrix[30:], stored(rows[30:], "bfloat16"))
        finally:
            await client.aclose()

    run(main())


def test_storage_argument_and_attaching(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            assert tier.storage is None and "storage=None" in repr(tier)
            cache = EmbeddingCache(1000, None, 16, dim=DIM, tier=tier)
            own = getattr(cache.sync, "storage", "float32")
            assert tier.storage == own  # the cache's storage
            tier.attach_storage("int8")  # a second cache: the first one's stays
            assert tier.storage == own
            keys, rows = keys_of(3), rows_of(3, seed=7)
            await cache.put_many(keys, rows)
            value = await tier.client.get(tier.redis_key(keys[0]))
            assert isinstance(value, bytes)
            assert value[5] == wire.DTYPES[own]
        async with tier_on(flushed_server, storage="float16") as tier:
            EmbeddingCache(1000, None, 16, dim=DIM, tier=tier)
            assert tier.storage == "float16"  # given: kept
        for bad, error in (("fp16", ArgumentValueError), (16, ArgumentTypeError)):
            with pytest.raises(error, match="storage"):
                async with tier_on(flushed_server, storage=bad):
                    pass

    run(main())


@pytest.mark.parametrize("storage", STORAGES)
def test_a_tier_writes_the_storage_of_its_cache(flushed_server: RedisServer, storage: str) -> None:
    async def main() -> None:
        keys, rows = keys_of(5), rows_of(5, seed=8)
        async with tier_on(flushed_server) as tier:
            cache = EmbeddingCache(1000, None, 16, dim=DIM, tier=tier, storage=storage)
            assert tier.storage == storage
            await cache.put_many(keys, rows)
            value = await tier.client.get(tier.redis_key(keys[0]))
            assert isinstance(value, bytes)
            assert value[5] == wire.DTYPES[storage]
            # another storage's cache reads it, and keeps the rows in its own
            reader = RedisTier(tier.client, timeout=5.0)
            other = EmbeddingCache(1000, None, 16, dim=DIM, tier=reader, storage="float16")
            assert reader.storage == "float16"
            matrix, found = await other.get_many(keys)
            # the read-through answers what the cache now holds: the tier's rows
            # as float16 keeps them, the same as every later hit
            held = stored(stored(rows, storage), "float16")
            assert found.all() and np.array_equal(matrix, held)
            kept, found = other.sync.get_many(keys)
            assert found.all() and np.array_equal(kept, held)

    run(main())


@pytest.mark.parametrize("reader", ["float16", "bfloat16", "int8"])
def test_a_read_through_answers_what_later_hits_answer(
    flushed_server: RedisServer, reader: str
) -> None:
    """A cache whose storage differs from the encoding of the tier's values: the
    first answer of get, get_many and get_or_compute (read from the tier) is the
    same vector every later hit on the key returns."""

    async def main() -> None:
        keys, rows = keys_of(12), rows_of(12, seed=9)
        async with tier_on(flushed_server, storage="float32") as tier:
            await tier.put_many(keys, rows)
            held = stored(rows, reader)
            for how in ("get", "get_many", "get_or_compute", "get_many_out"):
                tier_r = RedisTier(tier.client, timeout=5.0)
                cache = EmbeddingCache(1000, None, 16, dim=DIM, tier=tier_r, storage=reader)
                if how == "get":
                    first = np.stack([await cache.get(k) for k in keys[:3]])
                    want = held[:3]
                    later = np.stack([await cache.get(k) for k in keys[:3]])
                elif how == "get_many":
                    await cache.put(keys[0], rows[0])  # one local hit among the misses
                    first, found = await cache.get_many(keys)
                    assert found.all()
                    want = held
                    later = (await cache.get_many(keys))[0]
                elif how == "get_many_out":
                    out = np.zeros((len(keys), DIM), np.float32)
                    first, found = await cache.get_many(keys, out=out)
                    assert first is out and found.all()
                    want = held
                    later = (await cache.get_many(keys))[0]
                else:
                    first = await cache.get_or_compute(keys, lambda ks: np.zeros((len(ks), DIM)))
                    want = held
                    later = (await cache.get_many(keys))[0]
                assert np.array_equal(first, want), how
                assert np.array_equal(later, want), how

    run(main())
