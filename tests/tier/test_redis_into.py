"""RedisTier.get_many receiving an MGET reply straight into its reader
(embcache.tier.mget.IntoReader standing in for the connection's stream
protocol) over real redis-servers: over TCP, a Unix socket and TLS, the reply
never goes through the connection's asyncio stream, the rows are bit-exact,
and the connection is handed back to redis-py in step, its own protocol
restored."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis_rows
import redis_servers
from redis_servers import HOST, RedisServer, free_port, require_redis

from embcache import CacheKey, EmbeddingCache

pytest.importorskip("redis", reason='redis-py is not installed (pip install ".[redis]")')
from redis.asyncio import Redis  # noqa: E402
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: E402

from embcache.redis import RedisTier  # noqa: E402
from embcache.tier.mget import INTO_BYTES, IntoReader  # noqa: E402
from embcache.tier.wire import encode_rows  # noqa: E402

redis_server = redis_servers.redis_server
flushed_server = redis_servers.flushed_server

DIM = 768


def keys_of(n: int) -> list[CacheKey]:
    return [CacheKey(f"into-{i}", "m") for i in range(n)]


def bit_rows(n: int, dim: int = DIM, seed: int = 5) -> np.ndarray:
    """Rows of arbitrary bit patterns (redis_rows.bit_rows) at this file's dim."""
    return redis_rows.bit_rows(n, dim, seed)


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(bounded())


def only_the_direct_read(client: Redis, monkeypatch: pytest.MonkeyPatch) -> list[IntoReader]:
    """Make the client's own mget fail, make every asyncio stream read that
    returns bytes fail (a reply read through the connection's stream fails the
    test; redis-py 7 polls the stream of a connection it hands out, with a zero
    timeout, and that poll reads nothing), and record every IntoReader made."""

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the reply went through the client's own mget")

    def polled(name: str) -> Any:
        read = getattr(asyncio.StreamReader, name)

        async def nothing_read(self: asyncio.StreamReader, *args: Any, **kwargs: Any) -> Any:
            data = await read(self, *args, **kwargs)
            if data:
                raise AssertionError("the reply went through the connection's stream")
            return data

        return nothing_read

    client.mget = refuse  # type: ignore[method-assign]
    for name in ("read", "readexactly", "readuntil", "readline"):
        monkeypatch.setattr(asyncio.StreamReader, name, polled(name))
    made: list[IntoReader] = []
    init = IntoReader.__init__

    def recording(self: IntoReader, *args: Any) -> None:
        init(self, *args)
        made.append(self)

    monkeypatch.setattr(IntoReader, "__init__", recording)
    return made


async def round_trip(client: Redis, monkeypatch: pytest.MonkeyPatch, n: int = 1000) -> None:
    """Write `n` rows through a tier on `client`, read them back with every
    stream read refused, and check the connection is redis-py's again."""
    tier = RedisTier(client, timeout=20)
    keys = keys_of(n)
    rows = bit_rows(n)
    await tier.put_many(keys, rows)
    await client.delete(tier.redis_key(keys[1]))
    pool = client.connection_pool
    conn = await pool.get_connection()
    protocol = conn._writer.transport.get_protocol()
    await pool.release(conn)
    with monkeypatch.context() as patch:
        made = only_the_direct_read(client, patch)
        for dim in (DIM, None):
            matrix, found = await tier.get_many(keys, dim=dim)
            assert found.tolist() == [i != 1 for i in range(n)]
            assert not matrix[1].any()
            assert matrix[found].view(np.uint32).tobytes() == rows[found].view(np.uint32).tobytes()
        out = np.full((n, DIM), 7.0, np.float32)
        matrix, found = await tier.get_many(keys, out=out)
        assert matrix is out and not out[1].any()
        assert np.array_equal(out[found], rows[found])
        cache = EmbeddingCache(2 * n, None, 16, dim=DIM, tier=tier)
        matrix, found = await cache.get_many(keys)
        assert found.sum() == n - 1 and np.array_equal(matrix[found], rows[found])
    assert len(made) == 4  # every read went through an IntoReader
    assert tier.get_tier_info().errors == 0
    # the same connection, its protocol restored, in step for redis-py
    conn = await pool.get_connection()
    try:
        assert conn._writer.transport.get_protocol() is protocol
        await conn.send_command("PING")
        assert await conn.read_response() in (b"PONG", "PONG", True)
    finally:
        await pool.release(conn)
    assert await client.get(tier.redis_key(keys[0])) is not None


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_tcp_reply_is_received_straight_into_the_reader(
    flushed_server: RedisServer, monkeypatch: pytest.MonkeyPatch, protocol: int
) -> None:
    async def main() -> None:
        client = Redis(host=HOST, port=flushed_server.port, protocol=protocol)
        try:
            await round_trip(client, monkeypatch)
        finally:
            await client.aclose()

    run(main())


def test_a_reply_larger_than_the_buffer_many_times_over(
    flushed_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        client = Redis(host=HOST, port=flushed_server.port)
        try:
            await round_trip(client, monkeypatch, n=4 * INTO_BYTES // (4 * DIM))
        finally:
            await client.aclose()

    run(main())


def test_concurrent_reads_on_several_connections_share_the_buffer_safely(
    flushed_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        client = Redis(host=HOST, port=flushed_server.port)
        try:
            tier = RedisTier(client, timeout=20)
            keys = keys_of(2000)
            rows = bit_rows(2000)
            await tier.put_many(keys, rows)
            parts = [(i * 250, (i + 1) * 250) for i in range(8)] * 2
            # one connection per read made first (their handshakes are read by redis-py)
            pool = client.connection_pool
            held = await asyncio.gather(*(pool.get_connection() for _ in parts))
            for conn in held:
                await pool.release(conn)
            with monkeypatch.context() as patch:
                made = only_the_direct_read(client, patch)
                got = await asyncio.gather(*(tier.get_many(keys[a:b], dim=DIM) for a, b in parts))
            assert len(made) == len(parts)
            assert len(client.connection_pool._available_connections) > 1  # really concurrent
            for (a, b), (matrix, found) in zip(parts, got):
                assert found.all()
                assert matrix.view(np.uint32).tobytes() == rows[a:b].view(np.uint32).tobytes()
        finally:
            await client.aclose()

    run(main())


def test_health_checks_still_go_through_redis_py(
    flushed_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        client = Redis(host=HOST, port=flushed_server.port, health_check_interval=1)
        try:
            tier = RedisTier(client, timeout=20)
            keys = keys_of(50)
            rows = bit_rows(50)
            await tier.put_many(keys, rows)
            for _ in range(2):
                await asyncio.sleep(1.1)  # a PING (read by redis-py) before the MGET
                matrix, found = await tier.get_many(keys, dim=DIM)
                assert found.all() and np.array_equal(matrix, rows)
            assert tier.get_tier_info().errors == 0
        finally:
            await client.aclose()

    run(main())


def test_a_health_check_that_reconnects_is_followed_by_the_read(
    flushed_server: RedisServer,
) -> None:
    """The next read's health check PINGs while the server holds its clients
    (CLIENT PAUSE), times out and, with a retry, reconnects: a new transport. The
    read must use that one (a transport taken before the check would be the old
    one: its protocol swapped on a dropped connection, the read waiting on it until
    the tier's timeout, a counted failure and no rows)."""

    async def main() -> None:
        client = Redis(
            host=HOST,
            port=flushed_server.port,
            health_check_interval=1,
            socket_timeout=0.2,
            retry=Retry(NoBackoff(), 4),
        )
        admin = Redis(host=HOST, port=flushed_server.port)
        try:
            tier = RedisTier(client, timeout=3)
            keys = keys_of(50)
            rows = bit_rows(50)
            await tier.put_many(keys, rows)
            matrix, found = await tier.get_many(keys, dim=DIM)
            assert found.all()
            await asyncio.sleep(1.2)  # past the interval: the next read checks health first
            await admin.execute_command("CLIENT", "PAUSE", "300", "ALL")
            matrix, found = await tier.get_many(keys, dim=DIM)
            assert found.all() and np.array_equal(matrix, rows)
            assert tier.get_tier_info().errors == 0
        finally:
            await client.aclose()
            await admin.aclose()

    run(main())


# -- a Unix socket and TLS ---------------------------------------------------------------


class OtherServer:
    """A redis-server listening only on a Unix socket or only with TLS."""

    def __init__(self, folder: Path, how: str) -> None:
        require_redis()
        self.folder = folder
        self.socket = str(folder / "redis.sock")
        self.port = free_port()
        args = [
            str(redis_servers.REDIS_SERVER),
            "--save", "", "--appendonly", "no", "--dir", str(folder),
            "--logfile", str(folder / "redis.log"), "--daemonize", "no",
        ]  # fmt: skip
        if how == "unix":
            args += ["--port", "0", "--unixsocket", self.socket]
        else:
            openssl = shutil.which("openssl")
            if openssl is None:
                pytest.skip("openssl is not installed: no certificate for the TLS server")
            subprocess.run(
                [
                    openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
                    "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
                ],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            args += [
                "--port", "0", "--bind", HOST, "--tls-port", str(self.port),
                "--tls-cert-file", str(folder / "cert.pem"),
                "--tls-key-file", str(folder / "key.pem"),
                "--tls-ca-cert-file", str(folder / "cert.pem"),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        self.how = how
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self, **kw: Any) -> Redis:
        if self.how == "unix":
            return Redis(unix_socket_path=self.socket, **kw)
        return Redis(
            host=HOST, port=self.port, ssl=True, ssl_ca_certs=str(self.folder / "cert.pem"), **kw
        )

    async def ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            client = self.client()
            try:
                await client.ping()
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server ({self.how}) did not start:\n{log}") from None
                await asyncio.sleep(0.05)
            finally:
                await client.aclose()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(params=["unix", "tls"])
def other_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OtherServer]:
    server = OtherServer(tmp_path, request.param)
    try:
        yield server
    finally:
        server.stop()


def test_unix_socket_and_tls_replies_are_received_straight_into_the_reader(
    other_server: OtherServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        await other_server.ready()
        client = other_server.client()
        try:
            await round_trip(client, monkeypatch)
        finally:
            await client.aclose()

    run(main())


# -- a server that hangs up mid-reply ---------------------------------------------------


VALUE = encode_rows(np.arange(1, 5, dtype=np.float32).reshape(1, 4))[0]


def good_reply(n: int) -> bytes:
    return b"*%d\r\n" % n + (b"$%d\r\n%s\r\n" % (len(VALUE), VALUE)) * n


async def _command(reader: asyncio.StreamReader) -> list[bytes]:
    head = await reader.readuntil(b"\r\n")
    args = []
    for _ in range(int(head[1:-2])):
        length = int((await reader.readuntil(b"\r\n"))[1:-2])
        args.append((await reader.readexactly(length + 2))[:-2])
    return args


async def hanging_up_once() -> tuple[asyncio.AbstractServer, list[int]]:
    """A server whose first MGET gets half its reply and then the connection
    closed; every later MGET its whole reply, every other command +OK. Returns
    the server and [its port, connections accepted, MGETs answered]."""
    state = [0, 0, 0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state[1] += 1
        try:
            while True:
                args = await _command(reader)
                if args[0].upper() != b"MGET":
                    writer.write(b"+OK\r\n")
                    continue
                state[2] += 1
                reply = good_reply(len(args) - 1)
                if state[2] == 1:
                    writer.write(reply[: len(reply) // 2])
                    await writer.drain()
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    state[0] = server.sockets[0].getsockname()[1]
    return server, state


@pytest.mark.parametrize("retries", [0, 1])
def test_a_server_hanging_up_mid_reply(retries: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without retries, a counted failure and a new connection for the next read;
    with one, redis-py's retry reconnects (and reads that reply through the
    stream) and the same call answers."""
    made: list[IntoReader] = []
    init = IntoReader.__init__

    def recording(self: IntoReader, *args: Any) -> None:
        init(self, *args)
        made.append(self)

    monkeypatch.setattr(IntoReader, "__init__", recording)

    async def main() -> None:
        server, state = await hanging_up_once()
        client = Redis(host=HOST, port=state[0], protocol=2, retry=Retry(NoBackoff(), retries))
        try:
            tier = RedisTier(client, timeout=10)
            keys = keys_of(500)
            matrix, found = await tier.get_many(keys, dim=4)
            assert len(made) == 1 and isinstance(made[0].done.exception(), RedisConnectionError)
            if retries:
                assert found.all() and (matrix == [1, 2, 3, 4]).all()
                assert tier.get_tier_info().errors == 0 and state[1:] == [2, 2]
            else:
                assert not found.any() and not matrix.any()
                assert tier.get_tier_info().errors == 1
                matrix, found = await tier.get_many(keys, dim=4)
                assert found.all() and (matrix == [1, 2, 3, 4]).all() and state[1:] == [2, 2]
        finally:
            await client.aclose()
            server.close()

    run(main())


SENTINEL_CONF = """port {port}
bind 127.0.0.1
dir {folder}
sentinel monitor embcache-primary 127.0.0.1 {primary} 1
sentinel down-after-milliseconds embcache-primary 60000
"""


def test_a_sentinel_managed_client_is_read_straight_into_the_reader(
    flushed_server: RedisServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # redis-py's Sentinel hands out the primary's connections (SentinelManagedConnection):
    # the tier reads them as it reads a plain client's, through the same pool
    from redis.asyncio.sentinel import Sentinel

    port = free_port()
    conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its configuration file
    conf.write_text(SENTINEL_CONF.format(port=port, folder=tmp_path, primary=flushed_server.port))
    assert redis_servers.REDIS_SERVER is not None
    proc = subprocess.Popen(
        [redis_servers.REDIS_SERVER, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def main() -> None:
            sentinel = Sentinel([(HOST, port)], socket_timeout=5)
            deadline = time.monotonic() + 10
            while True:
                try:
                    primary = await sentinel.discover_master("embcache-primary")
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.05)
            assert primary == (HOST, flushed_server.port)
            client = sentinel.master_for("embcache-primary")
            try:
                await round_trip(client, monkeypatch)
            finally:
                await client.aclose()
                for s in sentinel.sentinels:
                    await s.aclose()

        run(main())
    finally:
        proc.terminate()
        proc.wait(10)
