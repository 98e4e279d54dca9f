"""MGET read straight into a float32 matrix over a redis-py asyncio connection.

redis-py stays the connection layer (pooling, TLS, auth, Sentinel, health
checks, its retry policy): the command is sent through the connection the
client's pool hands out, and only the reply is read here, by
embcache._core.MgetReader (C), which checks every value as
embcache.tier.wire.decode_values does and copies each payload once into its
row. No Python object is made per value.

While the reply is read, the connection's asyncio transport delivers it to
an IntoReader (an asyncio.BufferedProtocol standing in for redis-py's stream
protocol, which it hands EOF, loss and write flow control to): the transport
receives straight into a buffer reused by every read of the thread (TLS
decrypts into it), and each chunk is fed to the C reader as it lands, so the
reply is copied once from the socket and once into its rows, in one wakeup of
the reading task. A transport that cannot change protocol is read through the
connection's stream instead, chunk by chunk.

A connection this path cannot read (no asyncio stream, a single-connection
client) makes ``direct_mget`` answer None: the caller then uses the client's
own ``mget`` and decode_values. Whenever a reply is not read to its end (a
timeout, a cancellation, a protocol error, a push message in its way) the
connection is disconnected before it goes back to the pool, as redis-py does,
so a later command never reads the rest of it.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from embcache._core import MGET_DONE, MGET_MORE, MGET_REPLY_ERROR, MgetReader
from embcache.tier.wire import Decoded

NEEDS_REDIS = (
    'embcache.redis needs redis-py >= 5.3: pip install "redis>=5.3" hiredis '
    '(from a clone of embcache: pip install ".[redis]")'
)
"""What an ImportError of embcache.redis says: redis-py is missing or older than
5.3 (before 5.3, an asyncio pool's get_connection needs a command name)."""

try:
    from redis import __version__ as REDIS_VERSION
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import InvalidResponse, ResponseError
except ImportError as exc:
    raise ImportError(NEEDS_REDIS) from exc
if tuple(int(part) for part in re.findall(r"\d+", REDIS_VERSION)[:2]) < (5, 3):
    raise ImportError(f"{NEEDS_REDIS}; this is redis-py {REDIS_VERSION}")

__all__ = [
    "INTO_BYTES",
    "NEEDS_REDIS",
    "READ_BYTES",
    "IntoReader",
    "direct_mget",
    "joined_spans",
]

READ_BYTES = 1 << 22
"""The most bytes asked of the stream per read (it answers what it holds)."""

INTO_BYTES = 1 << 18
"""The size of the buffer a transport receives a reply into (one per thread)."""

_local = threading.local()


def _into_buffer() -> memoryview:
    """This thread's receive buffer: every feed copies out what landed in it
    before the event loop receives again, and a thread runs one loop."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(INTO_BYTES))
    return view


class IntoReader(asyncio.BufferedProtocol):
    """The protocol of a connection's transport while the reply to one MGET is
    read: received bytes land in this thread's buffer and go straight to
    `reader` (an MgetReader); `done` gets the final status (or the error that
    ended the read). EOF, connection loss and write flow control are passed on
    to `inner`, the protocol it stands in for (redis-py's stream then knows
    the connection is gone). Bytes received after the reply are counted in
    ``late`` (the connection is then out of step)."""

    def __init__(self, inner: Any, reader: MgetReader, done: asyncio.Future[int]) -> None:
        self.inner = inner
        self.reader = reader
        self.done = done
        self.view = _into_buffer()
        self.late = 0

    def get_buffer(self, sizehint: int) -> memoryview:
        """The buffer the transport receives into."""
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        """Feed the `nbytes` just received to the reader."""
        if self.done.done():
            self.late += nbytes
            return
        try:
            status = self.reader.feed(self.view[:nbytes])
        except BaseException as exc:  # no memory for the rows: the read fails
            self.done.set_exception(exc)
            return
        if status != MGET_MORE:
            self.done.set_result(status)

    def _ended(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RedisConnectionError(why))

    def eof_received(self) -> bool | None:
        """The server closed its side: the read fails."""
        keep: bool | None = self.inner.eof_received()
        self._ended("Connection closed by server.")
        return keep

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: the read fails."""
        self.inner.connection_lost(exc)
        self._ended(f"Connection lost while reading the reply: {exc!r}")

    def pause_writing(self) -> None:
        """Passed on: the stream's writer waits for its drain."""
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        """Passed on: the stream's writer may write again."""
        self.inner.resume_writing()


def _swappable(conn: Any) -> Any:
    """The transport of `conn` when it can hand its reply to an IntoReader."""
    writer = getattr(conn, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is None or not hasattr(transport, "set_protocol"):
        return None
    if transport.is_closing() or not transport.is_reading():
        return None
    return transport


async def _send_and_read_into(
    conn: Any, transport: Any, command: bytes, reader: MgetReader
) -> None:
    """Send `command` on `conn` and read its reply into `reader` through an
    IntoReader on `transport` (the caller has run the connection's health check
    and taken `transport` after it: a failed check reconnects, with a new
    transport)."""
    inner = transport.get_protocol()
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    into = IntoReader(inner, reader, done)
    transport.set_protocol(into)
    try:
        await conn.send_packed_command(command, check_health=False)
        status = await done
    finally:
        transport.set_protocol(inner)
    if status == MGET_REPLY_ERROR:
        if into.late:  # bytes after the error line: out of step
            await conn.disconnect(nowait=True)
        raise ResponseError(reader.error_text)
    if status != MGET_DONE:
        raise InvalidResponse("Protocol error: not a reply to MGET of vectors")
    if reader.extra or into.late:
        raise InvalidResponse("Protocol error: bytes after the reply to MGET")


def _stream_of(conn: Any) -> asyncio.StreamReader | None:
    stream = getattr(conn, "_reader", None)
    return stream if isinstance(stream, asyncio.StreamReader) else None


async def _read_reply(conn: Any, reader: MgetReader) -> None:
    """Read the reply to the MGET just sent on `conn` into `reader`."""
    stream = _stream_of(conn)
    if stream is None:
        raise RedisConnectionError("Connection closed before the reply was read")
    read = stream.read
    feed = reader.feed
    status = MGET_MORE
    while status == MGET_MORE:
        data = await read(READ_BYTES)
        if not data:
            raise RedisConnectionError("Connection closed by server.")
        status = feed(data)
    if status == MGET_REPLY_ERROR:
        raise ResponseError(reader.error_text)
    if status != MGET_DONE:
        raise InvalidResponse("Protocol error: not a reply to MGET of vectors")
    if reader.extra:
        raise InvalidResponse("Protocol error: bytes after the reply to MGET")


async def direct_mget(
    client: Any,
    command: bytes,
    n: int,
    dim: int | None,
    out: npt.NDArray[np.float32] | None,
) -> Decoded | None:
    """The values of the `n` keys of `command` (``MGET`` packed as RESP:
    embcache.tier.wire.mget_command) decoded (see decode_values; with `out`,
    into it), read in one round trip on a connection of `client`'s pool; None
    when `client` cannot be read this way (nothing was sent then). Raises what
    the client's own ``mget`` would for a failure (ConnectionError,
    TimeoutError, ResponseError) and InvalidResponse for a reply that is not
    one to that MGET."""
    if getattr(client, "connection", None) is not None:
        return None  # a single-connection client: its lock is redis-py's own
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        if _stream_of(conn) is None:
            return None
        holder: list[MgetReader] = []

        async def attempt() -> None:
            if holder and out is not None:
                out.fill(0.0)  # rows of the attempt that failed
            holder[:] = [MgetReader(n, dim, out)]
            # a connection dropped by a failed attempt: redis-py's send reconnects it.
            # The health check runs first (no other reply may come, and a failed PING
            # reconnects, replacing the transport): the transport is taken after it.
            if conn.is_connected:
                await conn.check_health()
            transport = _swappable(conn) if conn.is_connected else None
            if transport is None:
                await conn.send_packed_command(command)
            try:
                if transport is None:
                    await _read_reply(conn, holder[0])
                else:
                    await _send_and_read_into(conn, transport, command, holder[0])
            except ResponseError:
                if holder[0].extra:  # bytes after the error line were taken: out of step
                    await conn.disconnect(nowait=True)
                raise  # an error reply was read whole: the connection is in step
            except BaseException:
                await conn.disconnect(nowait=True)
                raise

        async def failed(error: BaseException) -> None:
            await conn.disconnect()

        await conn.retry.call_with_retry(attempt, failed)
        interval = getattr(conn, "health_check_interval", 0)
        if interval:  # a reply was read, as after redis-py's own read_response
            conn.next_health_check = asyncio.get_running_loop().time() + interval
        reader = holder[0]
        return Decoded(reader.rows, reader.index, reader.errors)
    finally:
        await pool.release(conn)


def joined_spans(
    parts: list[tuple[int, Decoded]], dim: int | None, out: npt.NDArray[np.float32] | None
) -> Decoded:
    """The spans' decoded values as one (their rows of one dimension, `dim`; a
    span whose rows have another, read before `dim` was known, misses)."""
    errors = sum(part.errors for _, part in parts)
    if out is not None:
        index = np.concatenate([part.index + start for start, part in parts])
        return Decoded(out, index, errors)
    keep = [(s, p) for s, p in parts if len(p.index) and p.rows.shape[1] == dim]
    errors += sum(len(p.index) for s, p in parts if len(p.index) and p.rows.shape[1] != dim)
    if not keep:
        return Decoded(np.empty((0, dim or 0), dtype=np.float32), np.empty(0, np.intp), errors)
    rows = np.concatenate([p.rows for _, p in keep])
    index = np.concatenate([p.index + s for s, p in keep])
    return Decoded(rows, index, errors)
