"""The Redis tier beside its peers on one local server: the contenders and the
timed operations shared by ``benchmarks/bench_redis.py`` and ``embcache check
--compare`` (embcache.cli.redis_compare).

Contenders, all reading the same ``n`` vectors of dimension ``dim`` back from
the same Redis server, every one a hit:

* ``embcache``: ``EmbeddingCache(..., tier=RedisTier(redis.asyncio.Redis))``,
  its in-process tier emptied before every timed call, so every key comes from
  Redis (and is then kept in-process, as in real use);
* ``redisvl``: redisvl's ``EmbeddingsCache`` (``amget`` / ``aget``; no TTL, so it
  pays no EXPIRE per hit: its best case);
* ``langchain``: LangChain's ``CacheBackedEmbeddings`` over langchain-community's
  ``RedisStore`` (``embed_documents``; its cache has no async MGET of its own);
* ``mget``: a raw redis-py asyncio ``MGET`` (``GET`` for one key) of embcache's
  own bytes: the wire's limit, decoding nothing.

Every batch call returns that library's natural result (a float32 matrix; dicts
of lists; lists of floats; bytes). The server is a private ``redis-server`` on
a free 127.0.0.1 port with persistence off (:class:`LocalServer`), or the one
``EMBCACHE_REDIS_URL`` names (its keys under the prefixes used here are
overwritten and deleted).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Coroutine
from typing import Any

import numpy as np

from embcache import CacheKey, EmbeddingCache

__all__ = [
    "CONTENDERS",
    "LocalServer",
    "available_contenders",
    "dead_tier_cache",
    "make_contender",
    "open_breaker",
    "server_url",
    "workload",
]

MODEL = "bench-model-v1"
CONTENDERS = ("embcache", "mget", "redisvl", "langchain")
_MODULES = {
    "embcache": ("redis",),
    "redisvl": ("redis", "redisvl"),
    "langchain": ("redis", "langchain_community", "langchain_core"),
    "mget": ("redis",),
}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_contenders() -> list[str]:
    """The contenders whose libraries are installed."""
    return [c for c in CONTENDERS if all(_installed(m) for m in _MODULES[c])]


class LocalServer:
    """A private redis-server on a free 127.0.0.1 port, persistence off."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.folder = tempfile.mkdtemp(prefix="embcache-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.folder],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def server_url() -> tuple[str, LocalServer | None]:
    """``EMBCACHE_REDIS_URL`` if set, else a new LocalServer's URL (and the server,
    which the caller stops). FileNotFoundError / RuntimeError when neither works."""
    url = os.environ.get("EMBCACHE_REDIS_URL")
    if url:
        return url, None
    server = LocalServer()
    return server.url, server


def workload(n: int, dim: int, seed: int = 10) -> tuple[list[str], np.ndarray]:
    """`n` distinct texts and an (n, dim) float32 matrix of their vectors."""
    rng = np.random.default_rng(seed)
    texts = [f"benchmark text {i}: {rng.integers(1 << 62)}" for i in range(n)]
    return texts, rng.standard_normal((n, dim)).astype(np.float32)


class Contender:
    """One library reading vectors back from Redis. ``fill`` once; ``reset``
    (untimed) before each timed ``batch`` / ``singles`` call; ``close`` at the end."""

    name = ""
    client: Any  # the redis-py client once ``fill`` made it (asyncio but for LangChain's store)

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str) -> None:
        self.loop = loop
        self.url = url

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def fill(self, texts: list[str], rows: np.ndarray) -> None:
        raise NotImplementedError

    def connect(self) -> Any:
        """A new asyncio redis-py client for ``url``, kept in ``self.client``
        (which ``close`` releases)."""
        from redis.asyncio import Redis

        self.client = Redis.from_url(self.url)
        return self.client

    def reset(self) -> None:
        """Make the next reads go to Redis (nothing to do for most)."""

    async def batch(self) -> Any:
        """Read every vector in one call."""
        raise NotImplementedError

    async def singles(self, count: int) -> None:
        """Read the first `count` vectors one call each."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release the clients: the asyncio redis-py client in ``self.client``, if
        ``fill`` got as far as making it."""
        client = getattr(self, "client", None)
        if client is not None:
            await client.aclose()


class EmbcacheContender(Contender):
    name = "embcache"

    async def fill(self, texts: list[str], rows: np.ndarray) -> None:
        from embcache.redis import RedisTier

        self.connect()
        self.tier = RedisTier(self.client, prefix="bench-embcache", timeout=5.0)
        n, dim = rows.shape
        mb = 2 * n * (dim * 4 + 256) / 2**20 + 1
        self.cache = EmbeddingCache(2 * n, None, mb, dim=dim, tier=self.tier)
        self.keys = [CacheKey.from_text(t, MODEL) for t in texts]
        await self.cache.put_many(self.keys, rows)

    def reset(self) -> None:
        self.cache.sync.clear()

    async def batch(self) -> Any:
        matrix, found = await self.cache.get_many(self.keys)
        return matrix

    async def singles(self, count: int) -> None:
        get = self.cache.get
        for key in self.keys[:count]:
            await get(key)


class MgetContender(Contender):
    name = "mget"

    async def fill(self, texts: list[str], rows: np.ndarray) -> None:
        from embcache.tier.wire import encode_rows

        self.connect()
        self.keys = [f"bench-mget:{i}".encode() for i in range(len(texts))]
        await self.client.mset(dict(zip(self.keys, encode_rows(rows))))

    async def batch(self) -> Any:
        return await self.client.mget(self.keys)

    async def singles(self, count: int) -> None:
        get = self.client.get
        for key in self.keys[:count]:
            await get(key)


class RedisvlContender(Contender):
    name = "redisvl"

    async def fill(self, texts: list[str], rows: np.ndarray) -> None:
        from redisvl.extensions.cache.embeddings import EmbeddingsCache

        self.connect()
        self.cache = EmbeddingsCache(name="bench-redisvl", async_redis_client=self.client)
        self.texts = texts
        items = [
            {"content": t, "model_name": MODEL, "embedding": row.tolist()}
            for t, row in zip(texts, rows)
        ]
        await self.cache.amset(items)

    async def batch(self) -> Any:
        return await self.cache.amget(self.texts, MODEL)

    async def singles(self, count: int) -> None:
        aget = self.cache.aget
        for text in self.texts[:count]:
            await aget(text, MODEL)


class LangchainContender(Contender):
    name = "langchain"

    async def fill(self, texts: list[str], rows: np.ndarray) -> None:
        import redis
        from langchain_core.embeddings import Embeddings

        try:  # LangChain 1.x moved it to langchain-classic (a langchain-community dependency)
            from langchain_classic.embeddings import CacheBackedEmbeddings
        except ImportError:  # pragma: no cover - LangChain 0.3
            from langchain.embeddings import CacheBackedEmbeddings  # type: ignore[no-redef,import-not-found,unused-ignore]

        with warnings.catch_warnings():  # langchain-community warns that it is being sunset
            warnings.simplefilter("ignore", DeprecationWarning)
            from langchain_community.storage import RedisStore

        vectors = {t: row.tolist() for t, row in zip(texts, rows)}

        class Model(Embeddings):
            """The 'model' behind the cache: answers the fill, then must never be called."""

            frozen = False

            def embed_documents(self, batch: list[str]) -> list[list[float]]:
                if self.frozen:
                    raise AssertionError("a LangChain read missed the cache")
                return [vectors[t] for t in batch]

            def embed_query(self, text: str) -> list[float]:
                return self.embed_documents([text])[0]

        self.client = redis.Redis.from_url(self.url)
        store = RedisStore(client=self.client, namespace="bench-langchain")
        self.model = Model()
        self.embedder = CacheBackedEmbeddings.from_bytes_store(
            self.model, store, namespace=MODEL, key_encoder="sha256"
        )
        self.texts = texts
        self.embedder.embed_documents(texts)
        self.model.frozen = True

    async def batch(self) -> Any:
        return self.embedder.embed_documents(self.texts)

    async def singles(self, count: int) -> None:
        embed = self.embedder.embed_documents
        for text in self.texts[:count]:
            embed([text])

    async def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()


_CLASSES: dict[str, type[Contender]] = {
    "embcache": EmbcacheContender,
    "redisvl": RedisvlContender,
    "langchain": LangchainContender,
    "mget": MgetContender,
}


def make_contender(
    name: str, loop: asyncio.AbstractEventLoop, url: str, texts: list[str], rows: np.ndarray
) -> Contender:
    """Contender `name` on `loop`, filled with `texts` -> `rows` on the server at `url`."""
    contender = _CLASSES[name](loop, url)
    try:
        contender.run(contender.fill(texts, rows))
    except BaseException:
        contender.run(contender.close())
        raise
    return contender


async def dead_tier_cache(dim: int, tiered: bool) -> tuple[EmbeddingCache, Any]:
    """An EmbeddingCache whose tier (if `tiered`) points at a port nobody listens
    on, and the client to close. Call :func:`open_breaker` before timing. A
    coroutine, so that the client is made in the loop that will use it (redis-py's
    asyncio client binds to the current loop when made, on Python 3.9)."""
    if not tiered:
        return EmbeddingCache(1000, None, 16, dim=dim), None
    from redis.asyncio import Redis

    from embcache.redis import RedisTier

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    client = Redis(host="127.0.0.1", port=port)
    tier = RedisTier(client, timeout=1.0, cooldown_seconds=3600.0)
    return EmbeddingCache(1000, None, 16, dim=dim, tier=tier), client


class _DropTierWarnings(logging.Filter):
    """Drops the records of the tier's logger while the measurement trips its
    breaker on purpose (any record: nothing else runs through that tier)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


async def open_breaker(cache: EmbeddingCache) -> None:
    """Fail the dead tier's calls until its breaker is open. The tier's warning
    that Redis failed and is skipped for a while is what this measurement
    expects, so it is kept off the user's screen (dropped by a filter on the
    tier's logger, for these calls only)."""
    tier: Any = cache.tier
    logger = logging.getLogger("embcache.redis")
    expected = _DropTierWarnings()
    logger.addFilter(expected)
    try:
        for i in range(10):
            if tier.get_tier_info().breaker == "open":
                return
            await cache.get(CacheKey(f"probe-{i}", MODEL))
    finally:
        logger.removeFilter(expected)
    raise RuntimeError("the breaker did not open")
