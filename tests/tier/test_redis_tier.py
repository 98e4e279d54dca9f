"""The Redis tier against real servers (tests/redis_servers.py starts them on
127.0.0.1 with persistence off): read-through and write-through, one round trip
per batch, single flight across both tiers, TTL in Redis, corrupted values,
faults (dead, stopped and restarted, paused), a three-master cluster,
drop_model, CachedEmbedder, and two processes sharing vectors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis_servers
from conftest import run_python
from redis_servers import HOST, RedisCluster, RedisServer, free_port, require_redis

from embcache import CachedEmbedder, CacheKey, EmbeddingCache, InvalidVectorError

pytest.importorskip("redis", reason='redis-py is not installed (pip install ".[redis]")')
from redis.asyncio import Redis  # noqa: E402
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster  # noqa: E402

from embcache.redis import FAILURES_TO_OPEN, RedisTier  # noqa: E402
from embcache.tier.wire import encode_rows  # noqa: E402

# the session's servers (pytest finds fixtures by their name in this module)
redis_server = redis_servers.redis_server
redis_cluster = redis_servers.redis_cluster
flushed_server = redis_servers.flushed_server
flushed_cluster = redis_servers.flushed_cluster

DIM = 8
RNG = np.random.default_rng(10)


def keys_of(n: int, model: str = "m-v1", start: int = 0) -> list[CacheKey]:
    return [CacheKey(f"hash-{i}", model) for i in range(start, start + n)]


def rows_of(n: int, dim: int = DIM) -> np.ndarray:
    return RNG.standard_normal((n, dim)).astype(np.float32)


# Tests that do not test faults give Redis plenty of time: on a loaded machine a
# pipeline of thousands of writes can outlast the default 0.25 s, and a write
# that times out is (by design) dropped, which those tests would misread.
GENEROUS = 5.0


@asynccontextmanager
async def tier_on(server: RedisServer, **kw: Any) -> AsyncIterator[RedisTier]:
    kw.setdefault("timeout", GENEROUS)
    client = Redis(host=HOST, port=server.port)
    try:
        yield RedisTier(client, **kw)
    finally:
        await client.aclose()


@asynccontextmanager
async def tier_on_cluster(cluster: RedisCluster, **kw: Any) -> AsyncIterator[RedisTier]:
    kw.setdefault("timeout", GENEROUS)
    client = AsyncRedisCluster(host=HOST, port=cluster.nodes[0].port)
    try:
        yield RedisTier(client, **kw)
    finally:
        await client.aclose()


def new_cache(tier: RedisTier, dim: int | None = DIM, **kw: Any) -> EmbeddingCache:
    return EmbeddingCache(1000, None, 16, dim=dim, tier=tier, **kw)


async def command_calls(client: Any, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


class Counting:
    """A compute that records every key it was asked for."""

    def __init__(self, dim: int = DIM) -> None:
        self.calls: list[list[CacheKey]] = []
        self.dim = dim

    def __call__(self, keys: list[CacheKey]) -> np.ndarray:
        self.calls.append(list(keys))
        return np.stack([_row_for(k, self.dim) for k in keys])

    @property
    def computed(self) -> int:
        return sum(len(c) for c in self.calls)


def _row_for(key: CacheKey, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(key.digest[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


# -- read-through, write-through ---------------------------------------------------


def test_put_writes_redis_and_get_reads_it_back(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            first = new_cache(tier)
            k, v = keys_of(1)[0], rows_of(1)[0]
            await first.put(k, v.astype(np.float64))
            raw = await tier.client.get(tier.redis_key(k))
            assert raw == encode_rows(v[None])[0]
            assert await tier.client.pttl(tier.redis_key(k)) == -1  # no TTL asked

            second = new_cache(tier)
            assert k not in second
            got = await second.get(k)
            assert got is not None and got.dtype == np.float32 and np.array_equal(got, v)
            assert k in second  # filled in-process
            info = await second.get_cache_info()
            assert (info.tier_hits, info.tier_misses, info.tier_errors) == (1, 0, 0)
            assert info.misses == 1 and info.puts == 1  # the in-process miss, then the fill
            got[0] = 99  # the caller owns its array
            assert (await second.get(k))[0] == v[0]
            assert (await second.get_cache_info()).tier_hits == 1  # in-process hit: no Redis
            assert await second.get(CacheKey("absent", "m-v1")) is None
            assert (await second.get_cache_info()).tier_misses == 1

    run(main())


def test_get_many_asks_redis_once_for_all_misses(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            keys, rows = keys_of(300), rows_of(300)
            await new_cache(tier).put_many(keys[100:200], rows[100:200])
            cache = new_cache(tier)
            await cache.put_many(keys[:100], rows[:100])  # in-process (and Redis)
            cache_only = new_cache(tier)
            await cache_only.put_many(keys[:100], rows[:100])
            # rows 0..99 in-process, 100..199 only in Redis, 200..299 nowhere; with repeats
            order = keys[:50] + keys[150:300] + keys[150:160] + keys[50:150]
            before = await command_calls(tier.client, "mget")
            matrix, found = await cache.get_many(order)
            assert await command_calls(tier.client, "mget") == before + 1
            expect = {k: r for k, r in zip(keys[:200], rows[:200])}
            for k, row, hit in zip(order, matrix, found.tolist()):
                assert hit == (k in expect)
                assert np.array_equal(row, expect[k]) if hit else not row.any()
            assert all(k in cache for k in keys[100:200])
            info = await cache.get_cache_info()
            # distinct keys asked: 100..199 (100 hits) and 200..299 (100 misses)
            assert (info.tier_hits, info.tier_misses) == (100, 100)
            # everything now in-process: no more Redis reads for the hits
            before = await command_calls(tier.client, "mget")
            matrix, found = await cache.get_many(keys[:200])
            assert found.all() and await command_calls(tier.client, "mget") == before

    run(main())


def test_get_many_into_out_and_without_a_fixed_dim(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            keys, rows = keys_of(70), rows_of(70)
            await new_cache(tier).put_many(keys, rows)
            free = new_cache(tier, dim=None)
            matrix, found = await free.get_many(keys)  # nothing in-process fixes the dim
            assert found.all() and np.array_equal(matrix, rows)
            out = np.full((70, DIM), 7.0, dtype=np.float32)
            other = new_cache(tier)
            matrix, found = await other.get_many(keys[:60] + keys_of(10, start=500), out)
            assert matrix is out and found.tolist() == [True] * 60 + [False] * 10
            assert np.array_equal(out[:60], rows[:60])

    run(main())


def test_large_put_many_and_get_many_slice_through_the_tier(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            keys, rows = keys_of(1500), rows_of(1500, 768)  # > 2 MiB: the sliced paths
            await EmbeddingCache(5000, None, 64, dim=768, tier=tier).put_many(keys, rows)
            assert await tier.client.dbsize() == 1500
            matrix, found = await EmbeddingCache(5000, None, 64, tier=tier).get_many(keys)
            assert found.all() and np.array_equal(matrix, rows)

    run(main())


def test_rejected_put_writes_nothing_anywhere(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            cache = new_cache(tier)
            k = keys_of(1)[0]
            for bad in ([1.0] * (DIM - 1), [np.nan] * DIM, [[1.0] * DIM], []):
                with pytest.raises(ValueError):
                    await cache.put(k, bad)
            with pytest.raises(InvalidVectorError):
                await cache.put_many(keys_of(3), np.array([[1.0] * DIM, [np.inf] * DIM, [0] * DIM]))
            with pytest.raises(TypeError):
                await cache.put("not a key", [1.0] * DIM)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await cache.get_many(["x"])  # type: ignore[list-item]
            assert await tier.client.dbsize() == 0 and len(cache) == 0

    run(main())


def test_remove_deletes_from_both_and_clear_only_in_process(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            cache = new_cache(tier)
            a, b = keys_of(2)
            await cache.put_many([a, b], rows_of(2))
            assert await cache.remove(a) is True
            assert a not in cache and await tier.client.exists(tier.redis_key(a)) == 0
            assert await cache.remove(a) is False
            await cache.clear()
            assert len(cache) == 0 and await tier.client.exists(tier.redis_key(b)) == 1
            assert await cache.get(b) is not None  # back from Redis
            # only in Redis: remove still finds it
            other = new_cache(tier)
            assert await other.remove(b) is True and await tier.client.dbsize() == 0

    run(main())


# -- get_or_compute, single flight, CachedEmbedder --------------------------------------


def test_get_or_compute_computes_only_what_neither_tier_has(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server, ttl_seconds=60) as tier:
            keys = keys_of(40)
            warm = Counting()
            await new_cache(tier).get_or_compute(keys[:30], warm)
            assert warm.computed == 30

            cache = new_cache(tier)
            await cache.put_many(keys[:10], np.stack([_row_for(k) for k in keys[:10]]))
            compute = Counting()
            mgets = await command_calls(tier.client, "mget")
            sets = await command_calls(tier.client, "set")
            got = await cache.get_or_compute(keys + keys[:5], compute)
            assert compute.calls == [keys[30:]]  # one call, only the keys nobody has
            assert await command_calls(tier.client, "mget") == mgets + 1
            assert await command_calls(tier.client, "set") == sets + 10  # written back
            assert np.array_equal(got, np.stack([_row_for(k) for k in keys + keys[:5]]))
            for k in keys[30:]:
                assert 0 < await tier.client.pttl(tier.redis_key(k)) <= 60_000
            assert all(k in cache for k in keys)
            # a third cache computes nothing at all
            third = Counting()
            again = await new_cache(tier, dim=None).get_or_compute(keys, third)
            assert third.calls == [] and np.array_equal(again, got[:40])

    run(main())


def test_single_flight_holds_across_both_tiers(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            keys = keys_of(50)
            await new_cache(tier).put_many(keys[:25], np.stack([_row_for(k) for k in keys[:25]]))
            cache = new_cache(tier)
            calls: list[list[CacheKey]] = []

            async def slow(missing: list[CacheKey]) -> np.ndarray:
                calls.append(missing)
                await asyncio.sleep(0.05)
                return np.stack([_row_for(k) for k in missing])

            mgets = await command_calls(tier.client, "mget")
            results = await asyncio.gather(*(cache.get_or_compute(keys, slow) for _ in range(20)))
            assert calls == [keys[25:]]  # one compute for the whole process
            assert await command_calls(tier.client, "mget") == mgets + 1  # one Redis read
            expect = np.stack([_row_for(k) for k in keys])
            for got in results:
                assert np.array_equal(got, expect)

    run(main())


def test_compute_errors_store_nothing_in_either_tier(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            cache = new_cache(tier)

            def broken(missing: list[CacheKey]) -> np.ndarray:
                raise KeyError("model down")

            with pytest.raises(KeyError):
                await cache.get_or_compute(keys_of(3), broken)
            with pytest.raises(InvalidVectorError):
                await cache.get_or_compute(keys_of(3), lambda ks: np.full((len(ks), DIM), np.nan))
            assert len(cache) == 0 and await tier.client.dbsize() == 0

    run(main())


def test_cached_embedder_uses_the_tier(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            texts = [f"text {i}" for i in range(20)]
            sent: list[str] = []

            def embed(batch: list[str]) -> np.ndarray:
                sent.extend(batch)
                return np.stack([_row_for(CacheKey.from_text(t, "emb-v1")) for t in batch])

            first = CachedEmbedder(embed, "emb-v1", cache=new_cache(tier), batch_size=8)
            one = await first.embed(texts)
            assert len(sent) == 20
            second = CachedEmbedder(embed, "emb-v1", cache=new_cache(tier), batch_size=8)
            two = await second.embed(texts + ["new text"])
            assert sent[20:] == ["new text"]  # only the one text nobody had
            assert np.array_equal(two[:20], one)
            assert second.stats.model_calls == 1
            assert await tier.client.exists(tier.redis_key(second.key("new text"))) == 1
            info = second.get_cache_info()  # the embedder's own view has the tier's counts
            assert info.tier_hits >= 20 and info == await second.cache.get_cache_info()

    run(main())


# -- TTL, corrupted values ------------------------------------------------------------


def test_ttl_applies_in_redis(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server, ttl_seconds=0.3) as tier:
            k = keys_of(1)[0]
            await new_cache(tier).put(k, rows_of(1)[0])
            assert 0 < await tier.client.pttl(tier.redis_key(k)) <= 300
            assert await new_cache(tier).get(k) is not None
            await asyncio.sleep(0.45)
            fresh = new_cache(tier)
            assert await fresh.get(k) is None
            assert (await fresh.get_cache_info()).tier_misses == 1

    run(main())


CORRUPT = {
    "foreign": b'{"vector": [0.1, 0.2]}',
    "empty": b"",
    "truncated": encode_rows(np.ones((1, DIM), np.float32))[0][:-2],
    "other-dim": encode_rows(np.ones((1, DIM + 1), np.float32))[0],
    "nan": encode_rows(np.ones((1, DIM), np.float32))[0][:-4] + np.float32(np.nan).tobytes(),
    "inf": encode_rows(np.ones((1, DIM), np.float32))[0][:-4] + np.float32(np.inf).tobytes(),
}


def test_corrupted_values_are_misses_counted_as_errors(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            keys = keys_of(len(CORRUPT) + 1)
            for k, value in zip(keys, CORRUPT.values()):
                await tier.client.set(tier.redis_key(k), value)
            # a key of another type (a list): MGET answers nil, never an error
            await tier.client.rpush(tier.redis_key(keys[-1]), b"x")
            cache = new_cache(tier)
            for k in keys[:2]:
                assert await cache.get(k) is None
            matrix, found = await cache.get_many(keys)
            assert not found.any()
            info = await cache.get_cache_info()
            assert info.tier_errors == 2 + len(CORRUPT) and info.tier_hits == 0
            # get_or_compute computes them and overwrites the bad values
            compute = Counting()
            got = await cache.get_or_compute(keys[: len(CORRUPT)], compute)
            assert compute.computed == len(CORRUPT)
            fresh = new_cache(tier)
            again, found = await fresh.get_many(keys[: len(CORRUPT)])
            assert found.all() and np.array_equal(again, got)

    run(main())


def test_wrong_dim_for_a_fixed_dim_cache_is_a_miss(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            k = keys_of(1)[0]
            await new_cache(tier, dim=4).put(k, [1.0, 2.0, 3.0, 4.0])
            assert await new_cache(tier, dim=None).get(k) is not None
            cache = new_cache(tier, dim=DIM)
            assert await cache.get(k) is None
            assert (await cache.get_cache_info()).tier_errors == 1
            # a cache whose hits fix the batch's dim: a Redis row of another dim is a miss
            loose = new_cache(tier, dim=None)
            other = CacheKey("other", "m-v1")
            loose.sync.put_many([other], np.ones((1, 6)))
            matrix, found = await loose.get_many([other, k])
            assert found.tolist() == [True, False] and matrix.shape == (2, 6)

    run(main())


# -- faults ----------------------------------------------------------------------------


def test_dead_redis_keeps_serving_then_the_breaker_skips_it() -> None:
    require_redis()

    async def main() -> None:
        client = Redis(host=HOST, port=free_port())  # nothing listens there
        try:
            tier = RedisTier(client, timeout=0.5, cooldown_seconds=0.3)
            cache = new_cache(tier)
            k = keys_of(1)[0]
            await cache.put(k, rows_of(1)[0])  # stored in-process, the write failed
            assert await cache.get(k) is not None
            compute = Counting()
            got = await cache.get_or_compute(keys_of(5), compute)
            assert compute.computed == 4 and got.shape == (5, DIM)
            for i in range(5):
                assert await cache.get(CacheKey(f"miss-{i}", "m")) is None
            stats = tier.get_tier_info()
            assert stats.errors == FAILURES_TO_OPEN and stats.breaker == "open"
            assert stats.skipped >= 3
            skipped = stats.skipped
            await cache.put(CacheKey("while-open", "m"), rows_of(1)[0])  # write skipped
            assert (
                tier.get_tier_info().skipped == skipped + 1
                and tier.get_tier_info().errors == FAILURES_TO_OPEN
            )
            info = await cache.get_cache_info()
            assert info.tier_errors == FAILURES_TO_OPEN and info.size == 6
            # an open breaker costs no network time
            t0 = time.perf_counter()
            for _ in range(200):
                await cache.get(CacheKey("miss", "m"))
            assert (time.perf_counter() - t0) / 200 < 0.005
            await asyncio.sleep(0.35)
            assert tier.get_tier_info().breaker == "half-open"
            assert await cache.get(CacheKey("miss", "m")) is None  # the trial, fails
            assert (
                tier.get_tier_info().errors == FAILURES_TO_OPEN + 1
                and tier.get_tier_info().breaker == "open"
            )
        finally:
            await client.aclose()

    run(main())


def test_redis_stopped_mid_run_and_restarted(tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path / "restart").start()

    async def main() -> None:
        async with tier_on(server, timeout=0.5, cooldown_seconds=0.2) as tier:
            cache = new_cache(tier)
            keys = keys_of(30)
            first = await cache.get_or_compute(keys[:10], Counting())
            assert await tier.client.dbsize() == 10
            server.stop()
            # the cache keeps answering: hits in-process, misses computed
            compute = Counting()
            got = await cache.get_or_compute(keys[:20], compute)
            assert compute.calls == [keys[10:20]]
            assert np.array_equal(got[:10], first)
            for _ in range(FAILURES_TO_OPEN):
                await cache.get(CacheKey("probe", "m"))
            assert tier.get_tier_info().breaker == "open" and len(cache) == 20
            server.start()  # empty again (persistence is off)
            await asyncio.sleep(0.25)
            deadline = time.monotonic() + 10
            while True:  # the trial call reconnects; then Redis is used again
                await cache.put(keys[20], _row_for(keys[20]))
                if await tier.client.exists(tier.redis_key(keys[20])):
                    break
                assert time.monotonic() < deadline, tier.get_tier_info()
                await asyncio.sleep(0.25)
            assert tier.get_tier_info().breaker == "closed"
            compute = Counting()
            await cache.get_or_compute(keys[20:30], compute)
            assert compute.calls == [keys[21:30]]  # keys[20] was in-process
            fresh = new_cache(tier)
            matrix, found = await fresh.get_many(keys[20:30])
            assert found.all()

    try:
        run(main())
    finally:
        server.stop()


def test_slow_redis_times_out_and_is_counted(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server, timeout=0.05, cooldown_seconds=0.1) as tier:
            k = keys_of(1)[0]
            await new_cache(tier).put(k, rows_of(1)[0])
            pauser = Redis(host=HOST, port=flushed_server.port)
            try:
                await pauser.execute_command("CLIENT", "PAUSE", "400", "ALL")
                cache = new_cache(tier)
                t0 = time.perf_counter()
                assert await cache.get(k) is None
                assert time.perf_counter() - t0 < 0.3
                assert tier.get_tier_info().errors == 1
                await pauser.execute_command("CLIENT", "UNPAUSE")
            finally:
                await pauser.aclose()
            assert await cache.get(k) is not None  # Redis answers again
            assert tier.get_tier_info().breaker == "closed"

    run(main())


# -- Redis Cluster ---------------------------------------------------------------------


def test_cluster_batches_span_every_node_without_crossslot(flushed_cluster: RedisCluster) -> None:
    async def main() -> None:
        async with tier_on_cluster(flushed_cluster, ttl_seconds=60) as tier:
            keys, rows = keys_of(600), rows_of(600)
            await new_cache(tier).put_many(keys, rows)
            sizes = [int(n.cli("dbsize")) for n in flushed_cluster.nodes]
            assert sum(sizes) == 600 and all(s > 100 for s in sizes), sizes
            cache = new_cache(tier)
            matrix, found = await cache.get_many(keys + keys_of(10, start=1000))
            assert found.tolist() == [True] * 600 + [False] * 10
            assert np.array_equal(matrix[:600], rows)
            info = await cache.get_cache_info()
            assert (info.tier_hits, info.tier_misses, info.tier_errors) == (600, 10, 0)
            compute = Counting()
            await new_cache(tier).get_or_compute(keys_of(620), compute)
            assert compute.computed == 20
            other_model = keys_of(50, model="m-v2")
            await new_cache(tier).put_many(other_model, rows_of(50))
            assert await tier.drop_model("m-v1") == 620
            assert sum(int(n.cli("dbsize")) for n in flushed_cluster.nodes) == 50
            assert await tier.drop_model("m-v1") == 0
            assert tier.get_tier_info().errors == 0
        # a brand-new cluster client (no slot map yet) finds every primary too
        async with tier_on_cluster(flushed_cluster) as fresh:
            assert await fresh.drop_model("m-v2") == 50
            assert sum(int(n.cli("dbsize")) for n in flushed_cluster.nodes) == 0

    run(main())


# -- drop_model ------------------------------------------------------------------------


def test_drop_model_deletes_one_models_keys_only(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            async with tier_on(flushed_server, prefix="embcache:m") as nested:
                models = ["m", "m*", "m?", "m[1]", "m:x", "mm"]
                for i, model in enumerate(models):
                    await new_cache(tier).put_many(keys_of(10 + i, model=model), rows_of(10 + i))
                await new_cache(nested).put_many(keys_of(7, model="x"), rows_of(7))
                await tier.client.set(b"unrelated", b"1")
                total = await tier.client.dbsize()
                assert await tier.drop_model("m*") == 11  # the glob is literal
                assert await tier.drop_model("m") == 10
                assert await tier.drop_model("m") == 0
                assert await tier.client.dbsize() == total - 21
                assert await nested.drop_model("x") == 7
                assert await tier.client.exists(b"unrelated") == 1

    run(main())


def test_drop_model_scans_past_one_batch(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            await new_cache(tier, dim=2).put_many(keys_of(2500), np.ones((2500, 2)))
            scans = await command_calls(tier.client, "scan")
            assert await tier.drop_model("m-v1") == 2500
            assert await command_calls(tier.client, "scan") >= scans + 2
            assert await command_calls(tier.client, "keys") == 0

    run(main())


# -- two processes -----------------------------------------------------------------------

SECOND_PROCESS = textwrap.dedent(
    """
    import asyncio, json, sys
    import numpy as np
    from redis.asyncio import Redis
    from embcache import CacheKey, EmbeddingCache
    from embcache.redis import RedisTier

    async def main():
        client = Redis(host="127.0.0.1", port=int(sys.argv[1]))
        tier = RedisTier(client, prefix="shared")
        cache = EmbeddingCache(1000, None, 16, tier=tier)
        keys = [CacheKey(f"hash-{i}", "m-v1") for i in range(200)]

        def compute(missing):
            raise AssertionError(f"the second process computed {len(missing)} keys")

        matrix = await cache.get_or_compute(keys, compute)
        info = await cache.get_cache_info()
        await client.aclose()
        np.save(sys.argv[2], matrix)
        print(json.dumps({"tier_hits": info.tier_hits, "size": info.size}))

    asyncio.run(main())
    """
)


def test_two_processes_share_vectors(flushed_server: RedisServer, tmp_path: Path) -> None:
    async def first() -> np.ndarray:
        async with tier_on(flushed_server, prefix="shared") as tier:
            compute = Counting()
            matrix = await new_cache(tier, dim=None).get_or_compute(keys_of(200), compute)
            assert compute.computed == 200
            return matrix

    computed = run(first())
    out = tmp_path / "second.npy"
    proc = run_python(
        ["-c", SECOND_PROCESS, str(flushed_server.port), str(out)], cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"tier_hits": 200, "size": 200}
    assert np.array_equal(np.load(out), computed)


# -- embcache check --compare ----------------------------------------------------------


def test_check_compare_redis_rows(
    flushed_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embcache.cli.redis_compare import run_redis_compare
    from embcache.cli.redis_peers import available_contenders
    from embcache.cli.report import Progress
    from embcache.cli.workloads import CheckConfig

    monkeypatch.setenv("EMBCACHE_REDIS_URL", flushed_server.url)
    cfg = dataclasses.replace(CheckConfig.make(quick=True, dim=64), compare_repeats=1)
    part = run_redis_compare(cfg, Progress(None))
    figures = {f.key: f for f in part.figures}
    peers = [p for p in available_contenders() if p != "embcache"]
    assert part.peers == peers and "mget" in peers
    for peer in peers:
        fig = figures[f"redis_batch_vs_{peer}"]
        assert fig.embcache > 0 and fig.peers[peer] > 0 and fig.goal_met is not None
    assert figures["redis_dead_added"].goal_kind == "absolute"
    assert figures["redis_dead_added"].embcache < 50_000 * 20  # generous: a loaded machine
    assert "EMBCACHE_REDIS_URL" in " ".join(part.notes)
    assert int(flushed_server.cli("dbsize")) > 0  # the contenders really used this server


def test_check_compare_without_a_server_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from embcache.cli import redis_peers
    from embcache.cli.redis_compare import run_redis_compare
    from embcache.cli.report import Progress
    from embcache.cli.workloads import CheckConfig

    monkeypatch.delenv("EMBCACHE_REDIS_URL", raising=False)
    monkeypatch.setattr(redis_peers.shutil, "which", lambda name: None)
    part = run_redis_compare(CheckConfig.make(quick=True, dim=8), Progress(None))
    assert part.figures == [] and part.peers == []
    assert "no Redis server" in part.notes[0] and "redis-server" in part.notes[0]


# -- bad input with a tier, call timeouts, a random workload against a model ----------


def test_bad_input_with_a_tier_reaches_neither_tier(flushed_server: RedisServer) -> None:
    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            cache = new_cache(tier)
            mgets = await command_calls(tier.client, "mget")
            with pytest.raises(TypeError):
                await cache.get("key")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await cache.get_many([CacheKey("a", "m"), None])  # type: ignore[list-item]
            with pytest.raises(TypeError):
                await cache.get_or_compute(keys_of(2), "not callable")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await cache.get_or_compute([1, 2], Counting())  # type: ignore[list-item]
            with pytest.raises(ValueError):
                await cache.get_or_compute(keys_of(2), Counting(), timeout=-1)
            with pytest.raises(ValueError):  # compute answers the wrong dimension
                await cache.get_or_compute(keys_of(2), Counting(dim=DIM + 1))
            assert await command_calls(tier.client, "mget") == mgets + 1  # only the last one
            assert await tier.client.dbsize() == 0 and len(cache) == 0
            assert (await cache.get_many([]))[0].shape == (0, DIM)
            assert (await cache.get_or_compute([], Counting())).shape == (0, DIM)

    run(main())


def test_call_timeout_bounds_the_tier_fetch(flushed_server: RedisServer) -> None:
    from embcache import FlightTimeoutError

    async def main() -> None:
        async with tier_on(flushed_server, timeout=5.0) as tier:
            cache = new_cache(tier)
            pauser = Redis(host=HOST, port=flushed_server.port)
            try:
                await pauser.execute_command("CLIENT", "PAUSE", "500", "ALL")
                t0 = time.perf_counter()
                with pytest.raises(FlightTimeoutError):
                    await cache.get_or_compute(keys_of(3), Counting(), timeout=0.1)
                assert time.perf_counter() - t0 < 0.45
                await pauser.execute_command("CLIENT", "UNPAUSE")
            finally:
                await pauser.aclose()
            compute = Counting()  # nothing was stuck in flight: the keys are computed now
            await cache.get_or_compute(keys_of(3), compute)
            assert compute.computed == 3 and tier.get_tier_info().breaker == "closed"

    run(main())


def test_random_workload_matches_a_model(flushed_server: RedisServer) -> None:
    """Two caches (two 'processes') over one tier, small enough to evict, random
    operations, every answer checked against a model. As in real use, a key's
    vector is the same whoever writes it (same content, same model): another
    process's in-process tier is not invalidated by a write."""
    rng = np.random.default_rng(7)

    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            caches = [EmbeddingCache(40, None, 4, dim=DIM, tier=tier) for _ in range(2)]
            written: set[CacheKey] = set()
            universe = keys_of(120)
            for step in range(400):
                cache = caches[int(rng.integers(2))]
                op = int(rng.integers(5))
                picked = [universe[int(i)] for i in rng.integers(len(universe), size=8)]
                if op == 0:
                    await cache.put(picked[0], _row_for(picked[0]))
                    written.add(picked[0])
                elif op == 1:
                    await cache.put_many(picked, np.stack([_row_for(k) for k in picked]))
                    written.update(picked)
                elif op == 2:
                    got = await cache.get(picked[0])
                    assert (got is None) == (picked[0] not in written), step
                    if got is not None:
                        assert np.array_equal(got, _row_for(picked[0])), step
                elif op == 3:
                    matrix, found = await cache.get_many(picked)
                    for k, row, hit in zip(picked, matrix, found.tolist()):
                        assert hit == (k in written), step
                        assert np.array_equal(row, _row_for(k) if hit else np.zeros(DIM)), step
                else:
                    compute = Counting()
                    matrix = await cache.get_or_compute(picked, compute)
                    assert not set(written) & {k for c in compute.calls for k in c}, step
                    written.update(picked)
                    for k, row in zip(picked, matrix):
                        assert np.array_equal(row, _row_for(k)), step
            assert tier.get_tier_info().errors == 0 and tier.get_tier_info().hits > 0
            infos = [await c.get_cache_info() for c in caches]
            assert sum(info.evictions for info in infos) > 0
            for cache in caches:
                cache.sync._check_invariants()

    run(main())


def test_no_memory_growth_over_many_tier_round_trips(flushed_server: RedisServer) -> None:
    import gc
    import tracemalloc

    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            cache = new_cache(tier)
            keys, rows = keys_of(100), rows_of(100)

            async def cycle(i: int) -> None:
                await cache.put_many(keys, rows)
                await cache.clear()
                matrix, found = await cache.get_many(keys + keys_of(5, start=10_000 + i))
                assert found.sum() == 100
                await cache.clear()
                await cache.get_or_compute(keys[:50] + keys_of(3, start=20_000 + i), Counting())
                await cache.get(keys_of(1, start=30_000 + i)[0])

            for i in range(10):  # warm up: connection pool, caches, allocator
                await cycle(i)
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for i in range(10, 50):
                    await cycle(i)
                gc.collect()
                growth = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            # 40 cycles, each moving ~350 vectors through Redis: a leak of even one
            # small object per key would show as 1 MB or more
            assert growth < 200 * 1024, growth

    run(main())


def test_many_tasks_on_a_cluster(flushed_cluster: RedisCluster) -> None:
    """40 tasks on two caches over one cluster tier, overlapping key sets: every
    answer right, and no key computed twice by one cache (single flight is per
    process; two processes may both compute a key they miss at the same moment)."""

    async def main() -> None:
        async with tier_on_cluster(flushed_cluster) as tier:
            caches = [new_cache(tier), new_cache(tier)]
            universe = keys_of(300)
            computed: list[list[CacheKey]] = [[], []]

            def compute_for(c: int) -> Any:
                async def compute(missing: list[CacheKey]) -> np.ndarray:
                    computed[c].extend(missing)
                    await asyncio.sleep(0.005)
                    return np.stack([_row_for(k) for k in missing])

                return compute

            async def task(i: int) -> None:
                c = i % 2
                picked = universe[(i * 37) % 200 : (i * 37) % 200 + 100]
                got = await caches[c].get_or_compute(picked, compute_for(c))
                assert np.array_equal(got, np.stack([_row_for(k) for k in picked]))

            await asyncio.gather(*(task(i) for i in range(40)))
            for c in range(2):
                assert len(computed[c]) == len(set(computed[c]))
            fresh = new_cache(tier)
            _, found = await fresh.get_many(universe)
            everything = set(computed[0]) | set(computed[1])
            assert found.tolist() == [k in everything for k in universe]
            assert tier.get_tier_info().errors == 0

    run(main())


def test_large_batches_go_in_several_bounded_calls(
    flushed_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import embcache.tier.redis

    monkeypatch.setattr(embcache.tier.redis, "CALL_BYTES", 100 * (12 + 4 * DIM))  # 100 values

    async def main() -> None:
        async with tier_on(flushed_server) as tier:
            keys, rows = keys_of(250), rows_of(250)
            await new_cache(tier).put_many(keys, rows)
            assert await tier.client.dbsize() == 250
            mgets = await command_calls(tier.client, "mget")
            cache = new_cache(tier)
            matrix, found = await cache.get_many(keys + keys_of(5, start=900))
            assert await command_calls(tier.client, "mget") == mgets + 3  # 100 + 100 + 55
            assert found.tolist() == [True] * 250 + [False] * 5
            assert np.array_equal(matrix[:250], rows)
            compute = Counting()
            got = await new_cache(tier).get_or_compute(keys_of(260), compute)
            assert compute.computed == 10 and np.array_equal(got[:250], rows)

    run(main())
