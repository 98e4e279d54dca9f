"""RedisTier.get_many reading MGET replies straight into rows (embcache.tier.mget)
over real connections: vectors round-trip bit-exactly through a real
redis-server in RESP2 and RESP3, an error reply is a counted failure that
leaves the connection usable, and a reply that breaks off or is not RESP (from
a scripted server) is a counted failure whose connection is never reused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import redis_rows
import redis_servers
from redis_servers import HOST, RedisServer

from embcache import CacheKey, EmbeddingCache

pytest.importorskip("redis", reason='redis-py is not installed (pip install ".[redis]")')
from redis.asyncio import Redis  # noqa: E402

import embcache.tier.redis as tier_module  # noqa: E402
from embcache.redis import RedisTier  # noqa: E402
from embcache.tier.wire import encode_rows  # noqa: E402

redis_server = redis_servers.redis_server
flushed_server = redis_servers.flushed_server

DIM = 768


def keys_of(n: int) -> list[CacheKey]:
    return [CacheKey(f"direct-{i}", "m") for i in range(n)]


def bit_rows(n: int, dim: int = DIM, seed: int = 5) -> np.ndarray:
    """Rows of arbitrary bit patterns (redis_rows.bit_rows) at this file's dim."""
    return redis_rows.bit_rows(n, dim, seed)


async def found_rows(
    tier: RedisTier, keys: list[CacheKey], dim: int | None, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """tier.get_many's answer as (the rows found, their positions): the matrix
    itself when every key was found, checking that every miss is a zero row."""
    matrix, found = await tier.get_many(keys, dim=dim, out=out)
    assert out is None or matrix is out
    assert matrix.shape[0] == len(keys) and not matrix[~found].any()
    index = np.flatnonzero(found)
    return (matrix if found.all() else matrix[index]), index


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


def no_fallback(client: Redis) -> None:
    """Make the client's own mget fail, so only the direct read can answer."""

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the direct read was not used")

    client.mget = refuse  # type: ignore[method-assign]


@pytest.mark.parametrize("protocol", [2, 3])
def test_vectors_round_trip_bit_exactly(flushed_server: RedisServer, protocol: int) -> None:
    async def main() -> None:
        client = Redis(host=HOST, port=flushed_server.port, protocol=protocol)
        try:
            tier = RedisTier(client, timeout=10)
            keys = keys_of(1000)
            rows = bit_rows(1000)
            await tier.put_many(keys, rows)
            no_fallback(client)
            for dim in (DIM, None):
                got, index = await found_rows(tier, keys, dim)
                assert index.tolist() == list(range(1000))
                assert got.view(np.uint32).tobytes() == rows.view(np.uint32).tobytes()
            out = np.zeros((1000, DIM), np.float32)
            got, index = await found_rows(tier, keys, DIM, out)
            assert got is out and len(index) == 1000
            assert out.view(np.uint32).tobytes() == rows.view(np.uint32).tobytes()
            # misses, foreign values and vectors of another dimension among them
            await client.delete(tier.redis_key(keys[3]))
            await client.set(tier.redis_key(keys[5]), b"not a vector")
            await client.set(tier.redis_key(keys[7]), encode_rows(rows[7:8, :5])[0])
            got, index = await found_rows(tier, keys, None)
            assert 3 not in index and 5 not in index and 7 not in index
            assert len(index) == 997 and np.array_equal(got, rows[index])
            assert tier.get_tier_info().errors == 2 and tier.get_tier_info().hits == 3000 + 997
            # through the cache, into its in-process tier too
            cache = EmbeddingCache(2000, None, 16, dim=None, tier=tier)
            matrix, found = await cache.get_many(keys[:3])
            assert found.all() and np.array_equal(matrix, rows[:3])
            assert cache.sync.get(keys[1]) is not None
        finally:
            await client.aclose()

    run(main())


def test_batches_over_call_bytes_go_in_several_direct_reads(
    flushed_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        client = Redis(host=HOST, port=flushed_server.port)
        try:
            tier = RedisTier(client, timeout=10)
            keys = keys_of(50)
            rows = bit_rows(50, 16)
            await tier.put_many(keys, rows)
            await client.delete(tier.redis_key(keys[0]), tier.redis_key(keys[21]))
            no_fallback(client)
            monkeypatch.setattr(tier_module, "CALL_BYTES", 10 * (12 + 4 * 16))
            for dim in (None, 16):
                got, index = await found_rows(tier, keys, dim)
                want = [i for i in range(50) if i not in (0, 21)]
                assert index.tolist() == want and np.array_equal(got, rows[want])
            out = np.zeros((50, 16), np.float32)
            _, index = await found_rows(tier, keys, 16, out)
            assert len(index) == 48 and not out[[0, 21]].any()
            assert np.array_equal(out[index], rows[index])
        finally:
            await client.aclose()

    run(main())


def test_an_error_reply_is_a_counted_failure_and_the_connection_stays_usable(
    flushed_server: RedisServer,
) -> None:
    async def main() -> None:
        admin = Redis(host=HOST, port=flushed_server.port)
        await admin.execute_command(
            "ACL", "SETUSER", "nomget", "on", "nopass", "~*", "+@all", "-mget"
        )
        client = Redis(host=HOST, port=flushed_server.port, username="nomget", password="")
        try:
            tier = RedisTier(client, timeout=10)
            keys = keys_of(3)
            await tier.put_many(keys, bit_rows(3))
            rows, index = await found_rows(tier, keys, DIM)
            assert (
                len(index) == 0
                and tier.get_tier_info().errors == 1
                and tier.get_tier_info().misses == 3
            )
            pool = client.connection_pool
            conn = await pool.get_connection()
            try:  # the same connection, in step: its next reply is its own
                assert conn.is_connected
                await conn.send_command("PING")
                assert await conn.read_response() in (b"PONG", "PONG", True)
            finally:
                await pool.release(conn)
        finally:
            await client.aclose()
            await admin.execute_command("ACL", "DELUSER", "nomget")
            await admin.aclose()

    run(main())


def test_a_single_connection_client_uses_its_own_mget(flushed_server: RedisServer) -> None:
    async def main() -> None:
        client = Redis(host=HOST, port=flushed_server.port, single_connection_client=True)
        try:
            tier = RedisTier(client, timeout=10)
            keys = keys_of(4)
            rows = bit_rows(4, 8)
            await tier.put_many(keys, rows)
            got, index = await found_rows(tier, keys, None)
            assert index.tolist() == [0, 1, 2, 3] and np.array_equal(got, rows)
        finally:
            await client.aclose()

    run(main())


# -- a scripted server ------------------------------------------------------------------


async def _command(reader: asyncio.StreamReader) -> list[bytes]:
    head = await reader.readuntil(b"\r\n")
    assert head[:1] == b"*", head
    args = []
    for _ in range(int(head[1:-2])):
        length = int((await reader.readuntil(b"\r\n"))[1:-2])
        args.append((await reader.readexactly(length + 2))[:-2])
    return args


@asynccontextmanager
async def scripted(answers: list[Callable[[int], bytes | None]]) -> AsyncIterator[list[int]]:
    """A server answering the i-th MGET with answers[i](key count) (None: say
    nothing more and keep the connection open) and every other command with +OK;
    yields its port and the connections accepted so far, in one list."""
    state = [0, 0]  # port, connections
    mgets = 0
    tasks: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal mgets
        state[1] += 1
        try:
            while True:
                args = await _command(reader)
                if args[0].upper() != b"MGET":
                    writer.write(b"+OK\r\n")
                    continue
                answer = answers[min(mgets, len(answers) - 1)](len(args) - 1)
                mgets += 1
                if answer is None:
                    await asyncio.sleep(3600)
                writer.write(answer)  # type: ignore[arg-type]
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.ensure_future(serve(reader, writer)))

    server = await asyncio.start_server(track, HOST, 0)
    state[0] = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


VALUE = encode_rows(np.arange(1, 5, dtype=np.float32).reshape(1, 4))[0]


def good_reply(n: int) -> bytes:
    return b"*%d\r\n" % n + (b"$%d\r\n%s\r\n" % (len(VALUE), VALUE)) * n


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda n: good_reply(n)[:-30], id="breaks off, then stalls"),
        pytest.param(lambda n: b"*%d\r\n$16\r\nABCD" % n, id="a bulk cut short"),
        pytest.param(lambda n: b"*%d\r\n?garbage\r\n" % n, id="not RESP"),
        pytest.param(lambda n: b"*%d\r\n" % (n + 1), id="a count it was not asked"),
        pytest.param(lambda n: good_reply(n) + b"+surplus\r\n", id="bytes after the reply"),
    ],
)
def test_a_broken_reply_is_a_counted_failure_and_its_connection_is_dropped(
    broken: Callable[[int], bytes],
) -> None:
    async def main() -> None:
        async with scripted([broken, good_reply]) as state:
            client = Redis(host=HOST, port=state[0], protocol=2)
            try:
                tier = RedisTier(client, timeout=0.3)
                keys = keys_of(3)
                out = np.zeros((3, 4), np.float32)
                _, index = await found_rows(tier, keys, 4, out)
                # nothing from a reply not read whole and alone, not even the rows
                # it had written before it broke off
                assert len(index) == 0 and not out.any() and tier.get_tier_info().errors == 1
                connections = state[1]
                rows, index = await found_rows(tier, keys, None)  # on a new connection
                assert index.tolist() == [0, 1, 2] and rows.tolist() == [[1, 2, 3, 4]] * 3
                assert state[1] == connections + 1
            finally:
                await client.aclose()

    run(main())


def test_a_read_cancelled_midway_drops_its_connection() -> None:
    async def main() -> None:
        async with scripted([lambda n: good_reply(n)[:-30], good_reply]) as state:
            client = Redis(host=HOST, port=state[0], protocol=2)
            try:
                tier = RedisTier(client, timeout=30)
                keys = keys_of(3)
                task = asyncio.ensure_future(tier.get_many(keys, dim=4))
                while not state[1]:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.2)  # the reply has broken off by now
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert tier.get_tier_info().errors == 0  # a cancellation is not Redis failing
                rows, index = await found_rows(tier, keys, None)
                assert index.tolist() == [0, 1, 2] and rows.tolist() == [[1, 2, 3, 4]] * 3
                assert state[1] == 2  # a new connection: the cut reply is never read
            finally:
                await client.aclose()

    run(main())
