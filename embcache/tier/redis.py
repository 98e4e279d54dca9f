"""RedisTier: Redis (or Redis Cluster) as the shared second tier of an
EmbeddingCache, so worker processes on many machines compute each embedding once.

    from redis.asyncio import Redis            # or redis.asyncio.cluster.RedisCluster
    from embcache import EmbeddingCache
    from embcache.redis import RedisTier

    tier = RedisTier(Redis(host="127.0.0.1"), prefix="embcache", ttl_seconds=86_400)
    cache = EmbeddingCache(100_000, 3600, 512, dim=768, tier=tier)

The cache reads its in-process tier first and Redis for what it misses (one
round trip per batch; per node on a cluster), fills the in-process tier with
what Redis had, and writes what it stores or computes to Redis too (pipelined,
``SET ... PX`` when `ttl_seconds` is set). Values are binary (a 12-byte header
naming the row's encoding and dimension, then the row as the cache stores it:
float32, float16, bfloat16 or int8; embcache.tier.wire); keys are
``prefix:model:digest-hex``. A value that fails validation is a miss, counted in
``tier_errors``. From one server (not a cluster), the reply to MGET is read
straight into the float32 rows, on a connection of the client's own pool
(embcache.tier.mget), with no Python object per value.

Faults: every Redis call is bounded by `timeout` seconds (a batch past
CALL_BYTES goes in several calls); a failure (refused, reset, timeout, an error
reply) is counted and answered as a miss, never raised.
After FAILURES_TO_OPEN failures in a row the tier is skipped for
`cooldown_seconds` (the circuit breaker is open: calls cost a clock read), then
one call tries Redis again. The breaker's transitions are logged on the
``embcache.redis`` logger at WARNING, once each (opened, with the failure that
opened it; closed again, once a call succeeds); single failures that do not
open it are logged at DEBUG, so a Redis that is down logs one line per cooldown
at most. The library adds no handler of its own but a NullHandler on
``embcache``: nothing is printed unless the application configures logging.
``drop_model`` is the exception to never raising: an explicit administrative
call, it raises RedisTierError when Redis fails.

Needs redis-py >= 5.3 (``pip install ".[redis]"`` from a clone, which adds hiredis). A
RedisTier, like its client, belongs to the event loop it is used on.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, as_key_tuple, row_bytes
from embcache.core.checks import check_seconds, deadline_scope
from embcache.core.names import check_name, track
from embcache.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    InvalidVectorError,
    RedisTierError,
)
from embcache.tier.breaker import Breaker
from embcache.tier.cluster import cluster_mget, drop_on, primaries
from embcache.tier.mget import NEEDS_REDIS, direct_mget, joined_spans
from embcache.tier.protocol import TierInfo
from embcache.tier.wire import (
    DIGEST_HEX,
    HEADER,
    Decoded,
    check_prefix,
    decode_values,
    encode_rows,
    encode_storable,
    key_prefix,
    mget_command,
    model_pattern,
)

try:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
except ImportError as exc:  # pragma: no cover - embcache.tier.mget, imported first, says it
    raise ImportError(NEEDS_REDIS) from exc

__all__ = ["FAILURES_TO_OPEN", "RedisTier", "RedisTierError", "TierInfo"]

FAILURES_TO_OPEN = 3
"""Failed Redis calls in a row that open the circuit breaker."""

CALL_BYTES = 8 << 20
"""About the most vector bytes one Redis call moves: a larger batch is read or
written in several calls (one after another), each bounded by timeout."""

log = logging.getLogger("embcache.redis")
T = TypeVar("T")


def _is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


class RedisTier:
    """Redis as the shared tier of an EmbeddingCache (``EmbeddingCache(..., tier=)``).

    `client`: a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``
    made with ``decode_responses=False`` (the default). `prefix`: the namespace of
    every key, a non-empty printable ASCII str without spaces, ``{}`` (hash tags)
    or glob characters. `ttl_seconds`: how long a value lives in Redis after it
    is written (None: no expiry; set with ``PX``, so a hit costs no extra round
    trip). `timeout`: the bound on every Redis call, in seconds (the former
    ``timeout_seconds=`` is refused with an error naming ``timeout=``).
    `cooldown_seconds`: how long Redis is skipped once FAILURES_TO_OPEN calls
    failed in a row. `storage`: the encoding of the rows it writes,
    ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"int8"`` (as
    ``EmbeddingCache(storage=)``); None (the default): the storage of the
    cache it is attached to (the first one, when caches share the tier;
    float32 until then). It reads rows of every encoding whatever it writes:
    each value's header names its own. `name`: the tier's label in monitoring
    (embcache.metrics) and in its log lines, never part of a key: 1 to 64
    characters from ``A-Za-z0-9_.:-`` (None: a generated ``embcache-N``).

    ArgumentTypeError (a TypeError) / ArgumentValueError (a ValueError) for
    anything else.
    """

    __slots__ = (
        "_client",
        "_cluster",
        "_prefix",
        "_prefix_bytes",
        "_ttl",
        "_px",
        "_timeout",
        "_cooldown",
        "_breaker",
        "_hits",
        "_misses",
        "_errors",
        "_skipped",
        "_name",
        "_storage",
        "__weakref__",
    )

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = "embcache",
        ttl_seconds: float | None = None,
        timeout: float = 0.25,
        cooldown_seconds: float = 5.0,
        storage: str | None = None,
        name: str | None = None,
        **renamed: object,
    ) -> None:
        if renamed:
            raise _renamed_keyword(renamed)
        if not isinstance(client, (Redis, RedisCluster)):
            hint = ""
            if type(client).__module__.startswith("redis"):
                hint = " (a synchronous client? use redis.asyncio.Redis or RedisCluster)"
            raise ArgumentTypeError(
                "client must be a redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster, "
                f"got {type(client).__name__}{hint}"
            )
        if client.get_connection_kwargs().get("decode_responses"):
            raise ArgumentValueError(
                "client must be made with decode_responses=False: vectors are binary"
            )
        self._prefix_bytes = check_prefix(prefix)
        self._client = client
        self._cluster = _is_cluster(client)
        self._prefix = prefix
        self._ttl = check_seconds(ttl_seconds, "ttl_seconds")
        # PX takes whole milliseconds >= 1: round up, so a value never outlives
        # what was asked by less than it should
        self._px = None if self._ttl is None else max(1, -int(-self._ttl * 1000 // 1))
        timeout_ = check_seconds(timeout, "timeout", allow_none=False)
        cooldown = check_seconds(cooldown_seconds, "cooldown_seconds", allow_none=False)
        assert cooldown is not None and timeout_ is not None
        if storage is not None:
            row_bytes(storage, 1)  # ArgumentTypeError / ArgumentValueError naming the four
        self._name = check_name(name)
        self._timeout = timeout_
        self._cooldown = cooldown
        self._breaker = Breaker(FAILURES_TO_OPEN, cooldown)
        self._hits = 0
        self._misses = 0
        self._errors = 0
        self._skipped = 0
        self._storage = storage
        track("tier", self)

    # -- configuration -----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The tier's label in monitoring and in its log lines; never part of a key."""
        return self._name

    @property
    def client(self) -> Redis | RedisCluster:
        """The redis-py client this tier uses."""
        return self._client

    @property
    def prefix(self) -> str:
        """The namespace every key of this tier starts with."""
        return self._prefix

    @property
    def ttl_seconds(self) -> float | None:
        """Seconds a value lives in Redis after it is written (None: forever)."""
        return self._ttl

    @property
    def timeout(self) -> float:
        """The bound on every Redis call, in seconds."""
        return self._timeout

    @property
    def cooldown_seconds(self) -> float:
        """How long Redis is skipped once the breaker opens, in seconds."""
        return self._cooldown

    @property
    def storage(self) -> str | None:
        """The encoding of the rows this tier writes (None: not given and not yet
        attached to a cache; it writes float32 then)."""
        return self._storage

    def attach_storage(self, storage: str) -> None:
        """Called by EmbeddingCache when this tier is attached to it: a tier made
        with ``storage=None`` writes in `storage` from now on. A tier whose
        storage is already set (given, or by an earlier cache) keeps it."""
        if self._storage is None:
            row_bytes(storage, 1)
            self._storage = storage

    def get_tier_info(self) -> TierInfo:
        """A TierInfo snapshot of this tier's counts and breaker state (its
        hits, misses and errors are EmbeddingCache.get_cache_info's tier_*)."""
        breaker = self._breaker
        return TierInfo(
            self._hits, self._misses, self._errors, self._skipped, breaker.state, breaker.opened
        )

    def redis_key(self, key: CacheKey) -> bytes:
        """The Redis key `key`'s vector lives under: ``prefix:model:digest-hex``.

        The same in every process and on every machine (it comes from the stable
        ``CacheKey.digest``); different for any two different keys or prefixes.
        """
        if type(key) is not CacheKey:
            raise ArgumentTypeError(f"key must be a CacheKey, got {type(key).__name__}")
        return key_prefix(self._prefix_bytes, key.model_version) + key.digest.hex().encode()

    def _keys(self, keys: Sequence[CacheKey]) -> list[bytes]:
        """The Redis keys of `keys` (redis_key of each, without its checks)."""
        n = len(keys)
        hexed = binascii.hexlify(b"".join([k.digest for k in keys]))
        models = [k.model_version for k in keys]
        spans = range(0, DIGEST_HEX * n, DIGEST_HEX)
        prefix = self._prefix_bytes
        if models.count(models[0]) == n:  # one model: the usual batch
            head = key_prefix(prefix, models[0])
            return [head + hexed[i : i + DIGEST_HEX] for i in spans]
        heads = {m: key_prefix(prefix, m) for m in set(models)}
        return [heads[m] + hexed[i : i + DIGEST_HEX] for m, i in zip(models, spans)]

    # -- the tier protocol (called by EmbeddingCache) ----------------------------------

    async def get_many(
        self,
        keys: Sequence[CacheKey],
        *,
        dim: int | None = None,
        out: npt.NDArray[np.float32] | None = None,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """``(matrix, found)`` for `keys`, as SyncEmbeddingCache.get_many: row i
        of the C-contiguous float32 `matrix` is the vector of keys[i] when
        found[i], else zeros. Rows have dimension `dim` (None: that of the first
        valid value, and shape (len(keys), 0) when nothing was found); a value
        of another dimension is a miss. With `out` (a writable C-contiguous
        float32 array of shape (len(keys), dim); `dim` defaults to its columns)
        the rows are written there and `matrix` is `out`. One MGET (on a
        cluster, one MGET per hash slot, pipelined per node, the nodes in
        parallel) per CALL_BYTES of values; a failed call leaves its keys and
        the later ones missed.

        Never raises for a Redis failure or a bad value: those are misses
        (KeyTypeError for a key that is not a CacheKey, ArgumentTypeError /
        ArgumentValueError for a `dim` that is not an int >= 1 or None, or an
        `out` that does not fit)."""
        keys = as_key_tuple(keys, "RedisTier.get_many")
        n = len(keys)
        if out is not None and dim is None and isinstance(out, np.ndarray) and out.ndim == 2:
            dim = int(out.shape[1])
        if dim is not None:
            if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
                raise ArgumentTypeError(f"dim must be an int or None, got {type(dim).__name__}")
            if dim < 1:
                raise ArgumentValueError(f"dim must be >= 1 or None, got {dim}")
        if out is not None:
            if not (
                isinstance(out, np.ndarray)
                and out.dtype == np.float32
                and out.flags.c_contiguous
                and out.flags.writeable
                and out.shape == (n, dim)
            ):
                raise ArgumentValueError(
                    f"out must be a writable C-contiguous float32 array of shape ({n}, {dim})"
                )
        elif dim is not None:
            out = np.zeros((n, dim), dtype=np.float32)  # rows read straight into place
        rows, index = await self._read(keys, dim, out)
        found = np.zeros(n, dtype=np.bool_)
        found[index] = True
        if out is not None:
            if len(index) < n:
                out[~found] = 0.0  # a miss is a zero row, whatever `out` held
            return out, found
        if len(index) == n:  # every key, in order: the new rows are the matrix
            return rows, found
        matrix = np.zeros((n, rows.shape[1]), dtype=np.float32)
        matrix[index] = rows
        return matrix, found

    async def _read(
        self, keys: tuple[CacheKey, ...], dim: int | None, out: npt.NDArray[np.float32] | None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]:
        """``(rows, index)`` of checked `keys`: row r of `rows` is the vector of
        keys[index[r]] (index ascending); with `out`, rows go to out[i] instead
        and `rows` is `out`."""
        n = len(keys)
        nothing = out if out is not None else np.empty((0, dim or 0), dtype=np.float32)
        if n == 0 or not self._breaker.allow():
            self._misses += n
            self._skipped += n
            return nothing, np.empty(0, dtype=np.intp)
        if not self._cluster:
            return await self._read_direct(keys, dim, out, nothing)
        rkeys = self._keys(keys)
        values: list[Any] = []
        try:
            for start, stop in self._spans(n, dim):
                async with self._bounded():
                    values += await cluster_mget(self._client, rkeys[start:stop])
        except asyncio.CancelledError:
            self._breaker.abandoned()
            raise
        except Exception as exc:
            self._failed("get_many", exc)
            if not values:
                self._misses += n
                return nothing, np.empty(0, dtype=np.intp)
            values += [None] * (n - len(values))  # the spans read before the failure count
        else:
            self._succeeded()
        decoded = decode_values(values, dim, out)
        hits = len(decoded.index)
        self._hits += hits
        self._misses += n - hits
        self._errors += decoded.errors
        return decoded.rows, decoded.index

    async def _read_direct(
        self,
        keys: Sequence[CacheKey],
        dim: int | None,
        out: npt.NDArray[np.float32] | None,
        nothing: npt.NDArray[np.float32],
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]:
        """_read from one server: each span's reply read straight into rows
        (embcache.tier.mget), or through the client's mget and decode_values
        when its connections cannot be read that way."""
        n = len(keys)
        parts: list[tuple[int, Decoded]] = []
        try:
            for start, stop in self._spans(n, dim):
                span_out = None if out is None else out[start:stop]
                span = keys[start:stop]
                async with self._bounded():
                    try:
                        command = mget_command(self._prefix_bytes, span)
                        part = await direct_mget(self._client, command, len(span), dim, span_out)
                    except BaseException:
                        if span_out is not None:
                            span_out.fill(0.0)  # rows of a reply read in part
                        raise
                    if part is None:
                        values = await self._client.mget(self._keys(span))
                        part = decode_values(values, dim, span_out)
                parts.append((start, part))
                if dim is None and len(part.index):
                    dim = int(part.rows.shape[1])
        except asyncio.CancelledError:
            self._breaker.abandoned()
            raise
        except Exception as exc:
            self._failed("get_many", exc)
            if not parts:
                self._misses += n
                return nothing, np.empty(0, dtype=np.intp)
        else:
            self._succeeded()
        decoded = parts[0][1] if len(parts) == 1 else joined_spans(parts, dim, out)
        hits = len(decoded.index)
        self._hits += hits
        self._misses += n - hits
        self._errors += decoded.errors
        return (decoded.rows if out is None else out), decoded.index

    async def put_many(self, keys: Sequence[CacheKey], matrix: npt.NDArray[np.float32]) -> None:
        """Write row i of the float32 `matrix` under keys[i], encoded in this
        tier's storage, in one pipeline of
        ``SET key value [PX ttl]`` (grouped per node on a cluster) per CALL_BYTES
        of values, stopping at the first failed one. Never raises
        for a Redis failure (counted in errors); a row this tier's storage
        cannot hold (|x| > 65504 for float16, say, from a cache of a wider
        storage) is not written, and counted in errors. KeyTypeError for a key that is
        not a CacheKey; ArgumentTypeError / ArgumentValueError (nothing written)
        unless `matrix` is a float32 ndarray of shape (len(keys), dim >= 1) with
        finite values."""
        keys = as_key_tuple(keys, "RedisTier.put_many")
        if not isinstance(matrix, np.ndarray) or matrix.dtype != np.float32:
            raise ArgumentTypeError("matrix must be a float32 numpy array")
        if matrix.ndim != 2 or matrix.shape[0] != len(keys) or matrix.shape[1] < 1:
            raise ArgumentValueError(
                f"matrix must have shape ({len(keys)}, dim >= 1), got {matrix.shape}"
            )
        if not np.isfinite(matrix).all():
            raise ArgumentValueError("matrix holds NaN or infinite values")
        if not len(keys):
            return
        if not self._breaker.allow():
            self._skipped += len(keys)
            return
        storage = self._storage or "float32"
        try:
            values = encode_rows(matrix, storage)
        except InvalidVectorError:  # rows the storage cannot hold: the others are written
            kept, values = encode_storable(matrix, storage)
            self._errors += len(keys) - len(kept)
            keys = tuple(keys[i] for i in kept)
            if not keys:
                return
        rkeys = self._keys(keys)
        px = self._px
        try:
            for start, stop in self._spans(len(keys), matrix.shape[1]):
                async with self._bounded():
                    pipe = self._client.pipeline(transaction=False)
                    for i in range(start, stop):
                        pipe.set(rkeys[i], values[i], px=px)
                    results = await pipe.execute(raise_on_error=False)
                error = next((r for r in results if isinstance(r, BaseException)), None)
                if error is not None:
                    raise error
        except asyncio.CancelledError:
            self._breaker.abandoned()
            raise
        except Exception as exc:
            self._failed("put_many", exc)
            return
        self._succeeded()

    async def remove_many(self, keys: Sequence[CacheKey]) -> int:
        """Remove `keys` from Redis (UNLINK); how many existed (0 on a failure,
        counted in errors; KeyTypeError for a key that is not a CacheKey)."""
        keys = as_key_tuple(keys, "RedisTier.remove_many")
        if not len(keys):
            return 0
        if not self._breaker.allow():
            self._skipped += len(keys)
            return 0
        rkeys = self._keys(keys)
        try:
            async with self._bounded():
                deleted = int(await self._client.unlink(*rkeys))
        except asyncio.CancelledError:
            self._breaker.abandoned()
            raise
        except Exception as exc:
            self._failed("remove_many", exc)
            return 0
        self._succeeded()
        return deleted

    # -- administration ----------------------------------------------------------------

    async def drop_model(self, model_version: str) -> int:
        """Delete every vector of `model_version` under this tier's prefix from
        Redis; the number deleted. Finds them with SCAN (MATCH on the model's key
        pattern) on every primary of a cluster, never KEYS, and deletes them with
        UNLINK in batches as it goes. In-process tiers are not touched (use
        ``remove``/``clear`` on each cache).

        ArgumentTypeError for a non-str, ArgumentValueError for an empty str;
        RedisTierError (a ConnectionError) when Redis fails on the way (what was
        deleted by then stays deleted). Not subject to the circuit breaker.
        """
        if not isinstance(model_version, str):
            raise ArgumentTypeError(
                f"model_version must be a str, got {type(model_version).__name__}"
            )
        if not model_version:
            raise ArgumentValueError("model_version must be a non-empty str")
        pattern = model_pattern(self._prefix_bytes, model_version)
        deleted = 0
        try:
            nodes = await primaries(self._client, self._call) if self._cluster else [None]
            for node in nodes:
                deleted += await drop_on(self._client, node, pattern, self._call)
        except Exception as exc:
            raise RedisTierError(
                f"drop_model({model_version!r}) failed after deleting {deleted} vectors: {exc!r}"
            ) from exc
        return deleted

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _spans(n: int, dim: int | None) -> list[tuple[int, int]]:
        """[start, stop) ranges of a batch of `n` values of dimension `dim`, each
        about CALL_BYTES at most: one Redis call (and one timeout) each."""
        per = max(1, CALL_BYTES // (HEADER.size + 4 * (dim or 768)))
        if n <= per:
            return [(0, n)]
        return [(start, min(start + per, n)) for start in range(0, n, per)]

    async def _call(self, awaitable: Awaitable[T]) -> T:
        async with self._bounded():
            return await awaitable

    def _bounded(self) -> Any:
        """A context bounding its body by `timeout` (TimeoutError)."""
        return deadline_scope(self._timeout)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Count a failed call; log it at WARNING only when it opens the breaker."""
        self._errors += 1
        if self._breaker.failed():
            log.warning(
                "embcache.redis: tier %s: %s failed (%r); circuit breaker open, "
                "Redis skipped for %.3g s",
                self._name,
                what,
                exc,
                self._cooldown,
            )
        else:
            log.debug("embcache.redis: tier %s: %s failed (%r)", self._name, what, exc)

    def _succeeded(self) -> None:
        """Record a successful call; log it at WARNING when it closes the breaker."""
        if self._breaker.succeeded():
            log.warning(
                "embcache.redis: tier %s: Redis answers again; circuit breaker closed",
                self._name,
            )

    def __repr__(self) -> str:
        kind = "RedisCluster" if self._cluster else "Redis"
        return (
            f"RedisTier({kind}, prefix={self._prefix!r}, ttl_seconds={self._ttl}, "
            f"timeout={self._timeout}, cooldown_seconds={self._cooldown}, "
            f"storage={self._storage!r})"
        )


_RENAMED = {"timeout_seconds": "timeout"}


def _renamed_keyword(given: dict[str, object]) -> ArgumentTypeError:
    """The error for keywords RedisTier does not take: one that was renamed says
    its new name (the old spelling is not kept: one name per concept), any
    other is Python's own unexpected-keyword TypeError."""
    name = next(iter(given))
    if name in _RENAMED:
        return ArgumentTypeError(
            f"RedisTier() takes {_RENAMED[name]}= (seconds) instead of {name}=, "
            f"which was renamed: RedisTier(client, {_RENAMED[name]}={given[name]!r})"
        )
    return ArgumentTypeError(f"RedisTier() got an unexpected keyword argument {name!r}")
