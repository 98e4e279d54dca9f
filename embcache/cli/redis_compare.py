"""The Redis rows of ``embcache check --compare``: the Redis tier beside redisvl,
LangChain and a raw MGET on one server (embcache.cli.redis_peers), when a
server can be had (``EMBCACHE_REDIS_URL``, or a private redis-server started
for the run) and redis-py is installed; otherwise one note saying why not.

Figures (best of repeats; the contenders interleaved within every repeat):

* batch of 1,000 keys from Redis, ns per row, against each peer separately:
  redisvl and LangChain (goal: at least 5x their rate, i.e. ratio <= 0.2) and
  the raw MGET of the same bytes (goal: at most its cost, ratio <= 1.0; that
  figure has samples of its own: in every repeat, PAIRS batches of each, timed
  one right after the other and taking turns going first, so its two sides are
  measured moments apart and neither always follows the peers' long reads);
* a single-key read (informational);
* what a dead Redis adds to an in-process miss once the breaker is open
  (goal: < 50 us);
* what a live tier adds to an in-process hit (goal: nothing, within noise:
  informational).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from embcache import CacheKey, EmbeddingCache
from embcache.cli.measure import Samples
from embcache.cli.redis_peers import (
    Contender,
    available_contenders,
    dead_tier_cache,
    make_contender,
    open_breaker,
    server_url,
    workload,
)
from embcache.cli.report import Figure, Progress
from embcache.cli.workloads import CheckConfig

__all__ = ["BATCH", "RedisComparison", "run_redis_compare"]

BATCH = 1000
PAIRS = 5
"""Batches of embcache and of the raw MGET, in turn, per repeat (their figure)."""
SINGLES = 200
GETS = 2000


@dataclass
class RedisComparison:
    """What the Redis part adds to the comparison."""

    peers: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def _gets(cache: EmbeddingCache, keys: list[CacheKey]) -> None:
    get = cache.get
    for key in keys:
        await get(key)


def _timed_run(loop: asyncio.AbstractEventLoop, coro: Any) -> int:
    t0 = time.perf_counter_ns()
    loop.run_until_complete(coro)
    return time.perf_counter_ns() - t0


def _measure_peers(
    contenders: list[Contender], repeats: int
) -> tuple[dict[str, Samples], dict[str, Samples], dict[str, Samples]]:
    """Batch and single-read samples of every contender, one of each per repeat,
    and the samples of the embcache-vs-MGET figure (PAIRS of each per repeat)."""
    batch = {c.name: Samples() for c in contenders}
    single = {c.name: Samples() for c in contenders}
    pair = [c for c in contenders if c.name in ("embcache", "mget")]
    paired = {c.name: Samples() for c in pair}
    for _ in range(repeats):
        for c in contenders:
            c.reset()
            batch[c.name].add(_timed_run(c.loop, c.batch()), BATCH)
            c.reset()
            single[c.name].add(_timed_run(c.loop, c.singles(SINGLES)), SINGLES)
        for i in range(PAIRS):
            for c in pair if i % 2 else pair[::-1]:
                c.reset()
                paired[c.name].add(_timed_run(c.loop, c.batch()), BATCH)
    return batch, single, paired


def _measure_overheads(
    loop: asyncio.AbstractEventLoop, embcache: Contender, dim: int, repeats: int
) -> dict[str, Samples]:
    """In-process misses with no tier and with a dead one (breaker open); in-process
    hits with no tier and with the live tier of `embcache`."""
    plain, _ = loop.run_until_complete(dead_tier_cache(dim, tiered=False))
    dead, client = loop.run_until_complete(dead_tier_cache(dim, tiered=True))
    loop.run_until_complete(open_breaker(dead))
    miss_keys = [CacheKey(f"absent-{i}", "m") for i in range(GETS)]
    tiered: Any = embcache
    live = tiered.cache
    hit_keys = tiered.keys
    loop.run_until_complete(live.get_many(hit_keys))  # every key in-process now
    hits = EmbeddingCache(2 * BATCH, None, 16, dim=dim)
    hits.sync.put_many(hit_keys, live.sync.get_many(hit_keys)[0])
    runs = {
        "miss_no_tier": (plain, miss_keys),
        "miss_dead_tier": (dead, miss_keys),
        "hit_no_tier": (hits, hit_keys),
        "hit_live_tier": (live, hit_keys),
    }
    samples = {name: Samples() for name in runs}
    for _ in range(repeats):
        for name, (cache, keys) in runs.items():
            samples[name].add(_timed_run(loop, _gets(cache, keys)), len(keys))
    if client is not None:
        loop.run_until_complete(client.aclose())
    return samples


def run_redis_compare(cfg: CheckConfig, progress: Progress) -> RedisComparison:
    """Measure the Redis rows, or explain in a note why they are missing."""
    out = RedisComparison()
    names = available_contenders()
    if "embcache" not in names:
        out.notes.append('Redis rows skipped: redis-py is missing (pip install "embcache[redis]")')
        return out
    try:
        url, server = server_url()
    except (OSError, RuntimeError) as exc:
        out.notes.append(
            f"Redis rows skipped: no Redis server ({exc}); install redis-server or set "
            "EMBCACHE_REDIS_URL"
        )
        return out
    dim, repeats = cfg.dim, cfg.compare_repeats
    loop = asyncio.new_event_loop()
    contenders: list[Contender] = []
    try:
        progress.step(f"[compare redis] filling {', '.join(names)} with {BATCH:,} vectors")
        texts, rows = workload(BATCH, dim)
        for n in names:
            contenders.append(make_contender(n, loop, url, texts, rows))
        progress.step(f"[compare redis] batch and single reads, {repeats} repeats")
        batch, single, paired = _measure_peers(contenders, repeats)
        progress.step("[compare redis] dead-Redis and live-tier overheads")
        over = _measure_overheads(loop, contenders[0], dim, repeats)
    finally:
        for c in contenders:
            loop.run_until_complete(c.close())
        loop.close()
        if server is not None:
            server.stop()
    peers = [n for n in names if n != "embcache"]
    out.peers = peers
    detail = {name: s.as_dict() for name, s in batch.items()}
    goals = {"redisvl": 0.2, "langchain": 0.2, "mget": 1.0}
    meaning = {
        "redisvl": "redisvl EmbeddingsCache.amget (JSON in hashes)",
        "langchain": "LangChain CacheBackedEmbeddings over RedisStore (MGET of JSON)",
        "mget": "a raw redis-py MGET of the same bytes, decoding nothing",
    }
    for peer in peers:
        goal = goals[peer]
        sides = paired if peer == "mget" else batch
        out.figures.append(
            Figure(
                f"redis_batch_vs_{peer}",
                f"Redis batch 1,000 vs {peer}, per row",
                "ns/row",
                sides["embcache"].best,
                {peer: sides[peer].best},
                goal,
                "ratio",
                {name: s.as_dict() for name, s in paired.items()} if peer == "mget" else detail,
                f"get_many of {BATCH:,} keys at dim {dim}, every one read from Redis "
                f"(in-process tier emptied first), against {meaning[peer]}"
                + (f" (goal: at least {1 / goal:.0f}x its rate)" if goal < 1 else ""),
            )
        )
    out.figures.append(
        Figure(
            "redis_single",
            "(Redis single-key read)",
            "ns/op",
            single["embcache"].best,
            {p: single[p].best for p in peers},
            0.0,
            "info",
            {name: s.as_dict() for name, s in single.items()},
        )
    )
    added = over["miss_dead_tier"].best - over["miss_no_tier"].best
    out.figures.append(
        Figure(
            "redis_dead_added",
            "dead Redis, added per get (ns)",
            "ns",
            added,
            {},
            50_000.0,
            "absolute",
            {k: over[k].as_dict() for k in ("miss_no_tier", "miss_dead_tier")},
            "what a Redis that is down adds to an in-process miss once the circuit breaker is open",
        )
    )
    out.figures.append(
        Figure(
            "redis_tier_hit_added",
            "(live tier, added per hit, ns)",
            "ns",
            over["hit_live_tier"].best - over["hit_no_tier"].best,
            {},
            0.0,
            "info",
            {k: over[k].as_dict() for k in ("hit_no_tier", "hit_live_tier")},
        )
    )
    where = "EMBCACHE_REDIS_URL" if server is None else "a private redis-server on 127.0.0.1"
    out.notes.append(
        f"Redis rows: {where}; every contender reads the same {BATCH:,} dim-{dim} vectors "
        "from it; redisvl without TTL (no EXPIRE per hit: its best case); best of "
        f"{repeats} interleaved repeats (against the raw MGET: best of {repeats * PAIRS} "
        "batches each, in turn); single reads: "
        f"{SINGLES} awaits per repeat."
    )
    missing = [n for n in ("redisvl", "langchain") if n not in names]
    if missing:
        out.notes.append("Redis peers not installed, skipped: " + ", ".join(missing))
    return out
