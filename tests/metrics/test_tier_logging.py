"""Tier faults and breaker transitions on the ``embcache`` logger: one WARNING per
transition (no log storm while Redis is down), single failures at DEBUG, and
nothing printed to stderr when the application configured no logging."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from pathlib import Path

import pytest
from conftest import key, run_python, vec
from redis_servers import RedisServer, free_port, require_redis

from embcache import EmbeddingCache
from embcache.tier.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_reports_each_transition_once() -> None:
    clock = Clock()
    b = Breaker(2, 5.0, clock)
    assert b.allow() and not b.failed()
    # two calls allowed while closed, both failing: only the first opens it
    assert b.allow() and b.allow()
    assert b.failed() and b.state == "open"
    assert not b.failed() and b.opened == 1  # a straggler: still open, no new opening
    assert b.succeeded()  # a straggler's success closes it: the store answers
    assert b.state == "closed"
    assert b.allow() and not b.failed()
    assert b.allow() and b.failed() and b.opened == 2
    clock.now += 5.1
    assert b.allow()  # the trial
    assert b.failed() and b.opened == 3  # trial failed: opened again
    clock.now += 5.1
    assert b.allow()
    assert b.succeeded() and b.state == "closed"  # closed by the trial
    assert not b.succeeded()  # already closed


def test_a_down_redis_logs_once_per_transition(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require_redis()
    from redis.asyncio import Redis

    from embcache.redis import FAILURES_TO_OPEN, RedisTier

    server = RedisServer(tmp_path / "log-redis").start()

    async def main() -> None:
        client = Redis(host="127.0.0.1", port=server.port)
        # a cooldown long enough that no trial goes out between two steps of a
        # slow machine's run, unless the test waits for it
        tier = RedisTier(client, timeout=0.5, cooldown_seconds=1.0, name="log-tier")
        try:
            cache = EmbeddingCache(100, dim=4, tier=tier)
            await cache.put(key(1), vec(1))
            server.stop()
            for i in range(FAILURES_TO_OPEN + 20):  # opens, then skipped: no more lines
                await cache.get(key(100 + i))
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            opened = warnings[0]
            assert opened.name == "embcache.redis"
            assert "log-tier" in opened.getMessage() and "breaker open" in opened.getMessage()
            debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
            assert len(debug) == FAILURES_TO_OPEN - 1  # the failures before it opened
            for _ in range(3):  # each cooldown: one trial, which fails and opens it again
                await asyncio.sleep(1.05)
                for i in range(5):
                    await cache.get(key(200 + i))
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 4
            assert tier.get_tier_info().breaker_opened == 4
            server.start()
            deadline = time.monotonic() + 10
            while tier.get_tier_info().breaker != "closed":
                await asyncio.sleep(0.1)
                await cache.get(key(300))
                assert time.monotonic() < deadline
            for i in range(10):
                await cache.get(key(400 + i))
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) == 5
            assert "log-tier" in warnings[-1].getMessage()
            assert "breaker closed" in warnings[-1].getMessage()
        finally:
            await client.aclose()

    try:
        with caplog.at_level(logging.DEBUG, logger="embcache"):
            asyncio.run(main())
    finally:
        server.stop()


SILENT = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np
    from redis.asyncio import Redis
    from embcache import CacheKey, EmbeddingCache
    from embcache.redis import RedisTier

    async def main():
        client = Redis(host="127.0.0.1", port=int(sys.argv[1]))
        tier = RedisTier(client, timeout=0.2, cooldown_seconds=0.05)
        cache = EmbeddingCache(10, dim=4, tier=tier)
        for i in range(20):
            await cache.get(CacheKey(f"k{i}", "m"))
            await cache.put(CacheKey(f"k{i}", "m"), np.ones(4))
            await asyncio.sleep(0.01)
        assert tier.get_tier_info().breaker_opened >= 1, tier.get_tier_info()
        await client.aclose()
        print("done")

    asyncio.run(main())
    """
)


def test_nothing_is_printed_to_stderr_without_a_logging_setup(tmp_path: Path) -> None:
    require_redis()
    proc = run_python(["-c", SILENT, str(free_port())], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert proc.stderr == ""
