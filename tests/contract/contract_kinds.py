"""The cache kinds the contract suite runs over, and what it observes of them.

Every test in tests/contract/ is written once, against a ``Driver``: the same
synchronous calls whatever the kind (an async kind's coroutines are run to
completion on the driver's own event loop). A kind is one ``Kind`` line in
KINDS: its name, how to make a driver from the constructor's keywords, and the
few ways its contract legitimately differs from the in-process cache's
(``tiered``: a shared tier answers what the in-process cache misses, counts
that in get_cache_info, and keeps what the in-process cache evicted, expired or
cleared). Tests read those fields; they never test a kind's name.

Every kind runs under each storage= (float32, float16, bfloat16, int8): what a
cache gives back is then the codec's round trip of what was put
(``Driver.stored``: embcache._core.decode_rows(encode_rows(...))), and an entry
costs the storage's row bytes (``Driver.entry_bytes``). Every kind runs under
every storage, in every test profile.

The shared kinds run over a SharedEmbeddingCache: a fresh segment in /dev/shm
per driver, unlinked after its test, alone (``shared``) or behind the asyncio
facade (``async-shared``, ``EmbeddingCache.wrap``). Their legitimate
differences are Kind fields: one dimension fixed at construction
(``fixed_dim``), CLOCK eviction rather than exact LRU order (``lru``), the
segment's own per-entry overhead (``overhead``) and no injected clock
(``clock``).

The tiered kind runs over a real redis-server on a loopback port
(tests/redis_servers.py), emptied before each test; each driver has its own key
prefix, so two drivers of one test share nothing, as two in-process caches do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pytest
import redis_servers
from conftest import OVERHEAD, TIMEOUT, key, vec

from embcache import CacheKey, EmbeddingCache, SharedEmbeddingCache, SyncEmbeddingCache
from embcache._core import decode_rows, encode_rows, row_bytes
from embcache.shared import ENTRY_OVERHEAD_BYTES as SHARED_OVERHEAD

# a tier given plenty of time: a Redis call that times out is (by design) a
# miss or a dropped write, which the contract's exact counts would misread
TIER_TIMEOUT = 5.0


class Driver:
    """One cache of some kind, behind synchronous calls.

    ``settle`` turns what a cache method returned into its result: the identity
    for a synchronous cache, running the coroutine for an async one.
    """

    def __init__(
        self,
        cache: Any,
        settle: Callable[[Any], Any],
        shared: Callable[[], dict[bytes, bytes]] = dict,
    ) -> None:
        self.cache = cache
        self._settle = settle
        self._shared = shared

    @property
    def core(self) -> Any:
        """The synchronous cache (the cache itself, or the facade's): a
        SyncEmbeddingCache or a SharedEmbeddingCache."""
        return getattr(self.cache, "sync", self.cache)

    def check(self) -> None:
        """Assert the cache's internal invariants hold."""
        core = self.core
        if isinstance(core, SharedEmbeddingCache):
            assert core.verify() == []
        else:
            core._check_invariants()

    def put(self, key: Any, vector: Any) -> None:
        self._settle(self.cache.put(key, vector))

    def get(self, key: Any) -> np.ndarray | None:
        return self._settle(self.cache.get(key))  # type: ignore[no-any-return]

    def get_many(self, keys: Any, out: Any = None) -> tuple[np.ndarray, np.ndarray]:
        return self._settle(self.cache.get_many(keys, out))  # type: ignore[no-any-return]

    def put_many(self, keys: Any, matrix: Any) -> None:
        self._settle(self.cache.put_many(keys, matrix))

    def get_or_compute(self, keys: Any, compute: Any, **kw: Any) -> np.ndarray:
        return self._settle(self.cache.get_or_compute(keys, compute, **kw))  # type: ignore[no-any-return]

    def remove(self, key: Any) -> bool:
        return self._settle(self.cache.remove(key))  # type: ignore[no-any-return]

    def clear(self) -> None:
        self._settle(self.cache.clear())

    def info(self) -> Any:
        return self._settle(self.cache.get_cache_info())

    def shared(self) -> dict[bytes, bytes]:
        """Everything the kind's shared tier holds for this cache ({} without one)."""
        return self._shared()

    def stored(self, values: Any) -> np.ndarray:
        """What this cache gives back for `values` (a vector or rows, as float32):
        their round trip through its storage's codec (themselves under float32)."""
        m = np.asarray(values, dtype=np.float32)
        rows = np.ascontiguousarray(m.reshape(-1, m.shape[-1]))
        storage = self.core.storage
        back = decode_rows(encode_rows(rows, storage), storage, rows.shape[1])
        return back.reshape(m.shape)  # type: ignore[no-any-return]

    def entry_bytes(self, dim: int) -> int:
        """Accounted bytes of one live entry of dimension `dim` in this cache."""
        overhead = SHARED_OVERHEAD if isinstance(self.core, SharedEmbeddingCache) else OVERHEAD
        return row_bytes(self.core.storage, dim) + overhead

    def __len__(self) -> int:
        return len(self.cache)

    def __contains__(self, key: object) -> bool:
        return key in self.cache


@dataclasses.dataclass(frozen=True)
class Kind:
    """A cache kind, as the contract suite sees it."""

    name: str
    open: Callable[[pytest.FixtureRequest, contextlib.ExitStack, dict[str, Any]], Driver]
    """A new driver for ``(request, cleanup, constructor keywords)``."""
    storage: str = "float32"
    """The storage= its caches are made with (unless a test names one)."""
    coroutines: bool = False
    """Its operations are coroutines (run by the driver), and get_or_compute takes
    an async compute as well as a synchronous one."""
    tiered: bool = False
    """A shared tier stands behind the in-process cache: what that cache misses is
    asked of the tier (counted in get_cache_info's tier_hits / tier_misses) and,
    when found, returned and kept in-process (counted as a put there); what is
    stored is written to it; what the in-process cache evicts, expires or clears
    stays there (so ``get`` still answers it, while ``in`` does not)."""
    fixed_dim: bool = False
    """Its caches hold one dimension, fixed at construction (``make()`` without
    ``dim=`` gives DEFAULT_DIM, vec's): a vector of another dimension is refused
    (DimensionMismatchError), so tests store other dimensions only where
    ``kind.any_dim(dim)``."""
    gaps: frozenset[str] = frozenset()
    """Contract cases this kind is known to break today (defects to fix, not
    differences): each runs as a strict xfail, so the fix shows as a failure
    until the name is taken out of here."""
    clock: bool = True
    """Takes an injected ``clock=`` (the TTL tests run on one)."""
    overhead: int = OVERHEAD
    """Accounted bytes of each entry beyond its row."""

    def entry_bytes(self, dim: int) -> int:
        """Accounted bytes of one live entry of dimension `dim` in its storage."""
        return row_bytes(self.storage, dim) + self.overhead

    def any_dim(self, dim: int) -> bool:
        """Whether a cache of this kind made without ``dim=`` stores vectors of `dim`."""
        return not self.fixed_dim or dim == DEFAULT_DIM

    def tier_counts(self, asked: int = 0, found: int = 0) -> dict[str, int]:
        """get_cache_info's tier fields after the tier was asked `asked` keys in all
        and had `found` of them (zeros for a kind without a tier)."""
        if not self.tiered:
            return {"tier_hits": 0, "tier_misses": 0, "tier_errors": 0}
        return {"tier_hits": found, "tier_misses": asked - found, "tier_errors": 0}

    def forgotten(self, row: np.ndarray) -> np.ndarray | None:
        """What ``get`` answers for `row`'s key once the in-process cache forgot it
        (evicted, expired or cleared): `row`, from a shared tier, or None."""
        return row if self.tiered else None

    def in_tier(self, stored: int) -> int:
        """How many entries a shared tier holds after `stored` distinct keys were
        stored (and none removed): all of them with a tier, else none."""
        return stored if self.tiered else 0

    def refilled(self, found: int) -> int:
        """How many of `found` keys that only a shared tier still held a lookup keeps
        in-process again (each counted as a put there): all with a tier, else none."""
        return found if self.tiered else 0

    def __repr__(self) -> str:
        return self.name


def _open_sync(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, kw: dict[str, Any]
) -> Driver:
    return Driver(SyncEmbeddingCache(**kw), lambda result: result)


def _loop(cleanup: contextlib.ExitStack) -> Callable[[Any], Any]:
    """A private event loop (closed at cleanup) and the settle that runs a
    coroutine on it, failing after TIMEOUT instead of hanging."""
    loop = asyncio.new_event_loop()
    cleanup.callback(loop.close)

    def settle(coro: Any) -> Any:
        return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))

    return settle


def _open_async(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, kw: dict[str, Any]
) -> Driver:
    return Driver(EmbeddingCache(**kw), _loop(cleanup))


_prefixes = itertools.count()


def _open_async_redis(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, kw: dict[str, Any]
) -> Driver:
    redis = pytest.importorskip(
        "redis",
        reason='redis-py is not installed (pip install ".[redis]")',
    )
    from redis.asyncio import Redis

    from embcache.redis import RedisTier

    # the session's server, emptied for this test (each test module names the
    # fixtures of tests/redis_servers.py, so pytest finds them)
    server = request.getfixturevalue("flushed_server")
    settle = _loop(cleanup)  # closed after the clients below (callbacks run last first)
    prefix = f"contract{next(_prefixes)}"

    async def connect() -> Redis:
        # made on the loop that uses it: Python 3.9's asyncio locks (inside
        # redis-py's pool) take the current event loop when they are created
        return Redis(host=redis_servers.HOST, port=server.port)

    client = settle(connect())
    cleanup.callback(settle, client.aclose())
    tier = RedisTier(client, prefix=prefix, timeout=TIER_TIMEOUT)
    looker = redis.Redis(host=redis_servers.HOST, port=server.port)
    cleanup.callback(looker.close)

    def shared() -> dict[bytes, bytes]:
        names = sorted(looker.scan_iter(match=f"{prefix}:*", count=1000))
        return dict(zip(names, looker.mget(names))) if names else {}

    return Driver(EmbeddingCache(**kw, tier=tier), settle, shared)


DEFAULT_DIM = 4
"""The dimension of a fixed-dimension kind's cache made without ``dim=`` (vec's)."""


def _shared_of(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, kw: dict[str, Any]
) -> SharedEmbeddingCache:
    """A SharedEmbeddingCache on a fresh segment, closed and unlinked at cleanup."""
    name = f"embcache-contract-{os.getpid()}-{next(_segments)}"
    dim = kw.pop("dim", None) or DEFAULT_DIM
    kw.pop("clock", None)
    cache = SharedEmbeddingCache(
        name, kw.pop("max_entries"), kw.pop("ttl_seconds"), kw.pop("max_memory_mb"), dim=dim, **kw
    )
    cleanup.callback(SharedEmbeddingCache.unlink, name)
    cleanup.callback(cache.close)
    return cache


_segments = itertools.count()


def _open_shared(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, kw: dict[str, Any]
) -> Driver:
    return Driver(_shared_of(request, cleanup, kw), lambda result: result)


def _open_async_shared(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, kw: dict[str, Any]
) -> Driver:
    return Driver(EmbeddingCache.wrap(_shared_of(request, cleanup, kw)), _loop(cleanup))


SHARED_DIFFERENCES: dict[str, Any] = {
    "fixed_dim": True, "clock": False, "overhead": SHARED_OVERHEAD,
}  # fmt: skip
SYNC = Kind("sync", _open_sync)
ASYNC = Kind("async", _open_async, coroutines=True)
ASYNC_REDIS = Kind("async-redis", _open_async_redis, coroutines=True, tiered=True)
SHARED = Kind("shared", _open_shared, **SHARED_DIFFERENCES)
ASYNC_SHARED = Kind("async-shared", _open_async_shared, coroutines=True, **SHARED_DIFFERENCES)

BASE_KINDS = [SYNC, ASYNC, ASYNC_REDIS, SHARED, ASYNC_SHARED]
"""Every cache kind the contract holds for: a new kind is one more line."""
STORAGES = ("float32", "float16", "bfloat16", "int8")


def under(kind: Kind, storage: str) -> Kind:
    """`kind` with caches of `storage` (named so, but under float32)."""
    if storage == "float32":
        return kind
    return dataclasses.replace(kind, name=f"{kind.name}-{storage}", storage=storage)


KINDS = [under(k, s) for s in STORAGES for k in BASE_KINDS]
"""Every kind under every storage (the suite takes seconds, whatever the profile)."""


@pytest.fixture(params=KINDS, ids=lambda k: k.name)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


Make = Callable[..., Driver]


@pytest.fixture
def make(kind: Kind, request: pytest.FixtureRequest) -> Iterator[Make]:
    """``make(max_entries=64, ttl_seconds=None, max_memory_mb=4.0, **kw)``: a new
    cache of the test's kind (closed with the test)."""
    with contextlib.ExitStack() as cleanup:

        def new(
            max_entries: int = 64,
            ttl_seconds: float | None = None,
            max_memory_mb: float = 4.0,
            **kw: Any,
        ) -> Driver:
            kw.update(max_entries=max_entries, ttl_seconds=ttl_seconds, max_memory_mb=max_memory_mb)
            kw.setdefault("storage", kind.storage)
            return kind.open(request, cleanup, kw)

        yield new


# -- what a test observes -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class State:
    """Everything observable about a cache: every get_cache_info field, ``len``,
    the bytes stored in-process under each of some keys (None when absent), and
    all its shared tier holds."""

    info: dict[str, Any]
    length: int
    stored: dict[CacheKey, bytes | None]
    shared: dict[bytes, bytes]


def observe(cache: Driver, keys: Iterable[CacheKey] = ()) -> State:
    """The cache's State (checking the core's invariants). Reading a present key
    counts one in-process hit; ``assert_unchanged`` allows for exactly those."""
    core = cache.core
    cache.check()
    info = dataclasses.asdict(cache.info())
    length = len(cache)
    stored: dict[CacheKey, bytes | None] = {}
    for k in keys:
        row = core.get(k) if k in core else None
        stored[k] = None if row is None else row.tobytes()
    return State(info, length, stored, cache.shared())


def assert_unchanged(
    cache: Driver,
    before: State,
    *,
    hits: int = 0,
    misses: int = 0,
    tier: dict[str, int] | None = None,
) -> None:
    """The cache, in-process and in its shared tier, is exactly as `before` saw it,
    but for `hits` and `misses` more lookups counted, and `tier` (get_cache_info's
    tier fields) added to its tier counts."""
    after = observe(cache, before.stored)
    expected = dict(before.info)
    expected["hits"] += hits + sum(v is not None for v in before.stored.values())
    expected["misses"] += misses
    lookups = expected["hits"] + expected["misses"]
    expected["hit_rate"] = expected["hits"] / lookups if lookups else 0.0
    for name, count in (tier or {}).items():
        expected[name] += count
    assert after.info == expected
    assert after.length == before.length
    assert after.stored == before.stored
    assert after.shared == before.shared


def counts(cache: Driver) -> dict[str, int]:
    """The counting fields of get_cache_info (tier counts included)."""
    info = cache.info()
    names = ("size", "hits", "misses", "puts", "overwrites", "evictions", "expirations",
             "removals", "tier_hits", "tier_misses", "tier_errors")  # fmt: skip
    return {name: getattr(info, name) for name in names}


FORMS: dict[str, Callable[[list[CacheKey]], Iterable[CacheKey]]] = {
    "list": list,
    "tuple": tuple,
    "iterator": iter,
    "generator": lambda keys: (k for k in keys),
}
"""The ways a caller may give keys: any iterable of CacheKey behaves the same."""


def assert_answer(got: np.ndarray | None, expected: np.ndarray | None) -> None:
    """`got` is a float32 array equal to `expected`, or both are None."""
    assert (got is None) == (expected is None), (got, expected)
    if got is not None:
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)  # type: ignore[arg-type]


def rows(ids: Iterable[float], dim: int = 4) -> np.ndarray:
    """The (n, dim) float32 matrix of vec(i) for each i of `ids`."""
    return np.stack([vec(i, dim) for i in ids])


__all__ = [
    "ASYNC",
    "ASYNC_REDIS",
    "ASYNC_SHARED",
    "BASE_KINDS",
    "DEFAULT_DIM",
    "SHARED",
    "STORAGES",
    "FORMS",
    "KINDS",
    "SYNC",
    "Driver",
    "Kind",
    "Make",
    "State",
    "assert_answer",
    "assert_unchanged",
    "counts",
    "key",
    "kind",
    "make",
    "observe",
    "rows",
    "vec",
]
