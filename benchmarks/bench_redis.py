"""The Redis tier beside its peers on one local redis-server, dim 768.

param ``peer``: "embcache" (EmbeddingCache with a RedisTier, its in-process
tier emptied in setup so every key comes from Redis), "redisvl"
(EmbeddingsCache), "langchain" (CacheBackedEmbeddings over RedisStore) or
"mget" (a raw redis-py asyncio MGET / GET of embcache's own bytes: the wire's
limit). The contenders and their timed operations are those of
embcache.cli.redis_peers, shared with ``embcache check --compare``.

Every benchmark is skipped (NotImplementedError in setup) when no
redis-server can be started (set EMBCACHE_REDIS_URL to use a running one) or
when the peer's library is not installed. The server is private (a free
127.0.0.1 port, persistence off) and stopped when the process exits.

* RedisBatch.time_get_1000: one batch read of 1,000 keys (seconds per batch).
* RedisSingle.time_get_hit: single-key reads, one round trip each (per read).
* DeadRedis.time_get_miss: an in-process miss with no tier vs with a tier whose
  Redis is down and whose circuit breaker is open (per get): what a dead Redis
  adds to each call.
* TierHit.time_get_hit: an in-process hit with no tier vs with a live Redis
  tier (per get): a tier must cost nothing on a hit.
"""

from __future__ import annotations

import asyncio
import atexit
from time import perf_counter

from embcache import CacheKey, EmbeddingCache
from embcache.cli.redis_peers import (
    CONTENDERS,
    available_contenders,
    dead_tier_cache,
    make_contender,
    open_breaker,
    server_url,
    workload,
)

from ._util import OPS, memo

DIM = 768
BATCH = 1000
SINGLES = 100


def _server_url():
    def start():
        try:
            url, server = server_url()
        except (OSError, RuntimeError) as exc:
            raise NotImplementedError(f"no Redis server: {exc}") from None
        if server is not None:
            atexit.register(server.stop)
        return url

    return memo("redis-url", start)


def _loop():
    return memo("redis-loop", asyncio.new_event_loop)


def _contender(peer):
    if peer not in available_contenders():
        raise NotImplementedError(f"{peer!r} is not installed")
    url = _server_url()

    def build():
        texts, rows = workload(BATCH, DIM)
        return make_contender(peer, _loop(), url, texts, rows)

    return memo(("redis-contender", peer), build)


def _singles_timer():
    return perf_counter() / SINGLES


def _per_op_timer():
    return perf_counter() / OPS


class RedisBatch:
    params = [list(CONTENDERS)]
    param_names = ["peer"]
    number = 1
    repeat = (5, 20, 4.0)
    warmup_time = 0

    def setup(self, peer):
        self.contender = _contender(peer)
        self.contender.reset()

    def time_get_1000(self, peer):
        self.contender.run(self.contender.batch())


class RedisSingle:
    params = [list(CONTENDERS)]
    param_names = ["peer"]
    number = 1
    repeat = (5, 20, 4.0)
    warmup_time = 0
    timer = staticmethod(_singles_timer)

    def setup(self, peer):
        self.contender = _contender(peer)
        self.contender.reset()

    def time_get_hit(self, peer):
        self.contender.run(self.contender.singles(SINGLES))


class DeadRedis:
    params = [["none", "dead"]]
    param_names = ["tier"]
    number = 1
    repeat = (10, 40, 2.0)
    warmup_time = 0.05
    timer = staticmethod(_per_op_timer)

    def setup(self, tier):
        if tier == "dead" and "embcache" not in available_contenders():
            raise NotImplementedError("redis-py is not installed")
        loop = _loop()

        def build():
            cache, client = loop.run_until_complete(dead_tier_cache(DIM, tiered=tier == "dead"))
            if client is not None:
                loop.run_until_complete(open_breaker(cache))
            return cache

        self.cache = memo(("dead-redis", tier), build)
        self.keys = memo("dead-redis.keys", lambda: [CacheKey(f"m{i}", "m") for i in range(OPS)])
        self.loop = loop

    def time_get_miss(self, tier):
        self.loop.run_until_complete(_gets(self.cache, self.keys))


class TierHit:
    params = [["none", "redis"]]
    param_names = ["tier"]
    number = 1
    repeat = (10, 40, 2.0)
    warmup_time = 0.05
    timer = staticmethod(_per_op_timer)

    def setup(self, tier):
        loop = _loop()
        if tier == "redis":
            contender = _contender("embcache")
            cache, keys = contender.cache, contender.keys
            if len(cache) < len(keys):  # read once through the tier: now all in-process
                loop.run_until_complete(cache.get_many(keys))
        else:

            def build():
                texts, rows = workload(BATCH, DIM)
                keys = [CacheKey.from_text(t, "m") for t in texts]
                cache = EmbeddingCache(2 * BATCH, None, 16, dim=DIM)
                cache.sync.put_many(keys, rows)
                return cache, keys

            cache, keys = memo("tier-hit.plain", build)
        assert len(cache) == len(keys)
        self.cache, self.keys, self.loop = cache, keys, loop

    def time_get_hit(self, tier):
        self.loop.run_until_complete(_gets(self.cache, self.keys))


async def _gets(cache, keys):
    get = cache.get
    for key in keys:
        await get(key)
