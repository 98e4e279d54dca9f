"""Client-side instruction counts of one 1,000-key dim-768 batch read from Redis:
a raw redis-py MGET of embcache's bytes vs EmbeddingCache.get_many through a
RedisTier (in-process tier emptied first), under valgrind's callgrind, which
a machine's load does not change. Starts a private redis-server (persistence
off) on a free 127.0.0.1 port and stops it.

    python tools/redis_callgrind.py          # needs valgrind and redis-server
    python tools/redis_callgrind.py --wall   # wall clock instead (no valgrind)

Each side runs 2 and 22 batches in fresh processes; the difference over 20 is
what one batch costs (imports and setup cancel out).

With ``--wall [ROUNDS]`` (default 30) one process times both sides on the same
keys, interleaved: each round times one get_many through the tier and one raw
MGET, in turn first (so neither side always follows the other); it prints the
best (and median) time of each, their ratio and the load average.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

# this checkout's embcache, for this process and the measured children alike
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def filled(port: int) -> tuple[Any, Any, list[Any], list[bytes], np.ndarray]:
    """The measured setup, shared by both modes: a RedisTier on the server at
    `port` under a dim-768 EmbeddingCache holding the 1,000 vectors of
    ``workload(1000, 768)``. Returns the redis-py client, the cache, its keys,
    their Redis keys and the rows."""
    from redis.asyncio import Redis

    from embcache import CacheKey, EmbeddingCache
    from embcache.cli.redis_peers import workload
    from embcache.redis import RedisTier

    client = Redis(host="127.0.0.1", port=port)
    tier = RedisTier(client, timeout=60)
    cache = EmbeddingCache(3000, None, 64, dim=768, tier=tier)
    texts, rows = workload(1000, 768)
    keys = [CacheKey.from_text(t, "m") for t in texts]
    await cache.put_many(keys, rows)
    rkeys = [tier.redis_key(k) for k in keys]
    return client, cache, keys, rkeys, rows


CHILD = r"""
import asyncio, sys
from tools.redis_callgrind import filled

async def main(which, port, batches):
    client, cache, keys, rkeys, _ = await filled(port)
    for _ in range(batches):
        cache.sync.clear()
        if which == "mget":
            await client.mget(rkeys)
        else:
            await cache.get_many(keys)
    await client.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def instructions(which: str, port: int, batches: int) -> int:
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", CHILD, which, str(port), str(batches)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", proc.stderr)
    assert found, proc.stderr[-2000:]
    return int(found.group(1))


def wall(port: int, rounds: int) -> None:
    """Interleaved wall-clock times of both sides, in this process."""
    import asyncio
    import statistics
    import time

    async def run() -> None:
        client, cache, keys, rkeys, rows = await filled(port)
        ours: list[int] = []
        raw: list[int] = []
        for r in range(rounds):
            if r % 2:
                t0 = time.perf_counter_ns()
                await client.mget(rkeys)
                raw.append(time.perf_counter_ns() - t0)
            cache.sync.clear()
            t0 = time.perf_counter_ns()
            matrix, found = await cache.get_many(keys)
            ours.append(time.perf_counter_ns() - t0)
            if not r % 2:
                t0 = time.perf_counter_ns()
                await client.mget(rkeys)
                raw.append(time.perf_counter_ns() - t0)
            assert found.all() and np.array_equal(matrix, rows)
        await client.aclose()
        for name, got in (("get_many", ours), ("mget", raw)):
            best, median = min(got) / 1e3, statistics.median(got) / 1e3
            print(f"{name:9s} best {best:8.1f} us  median {median:8.1f} us")
        print(
            f"get_many / mget: best {min(ours) / min(raw):.2f}  "
            f"median {statistics.median(ours) / statistics.median(raw):.2f}  "
            f"(load average {os.getloadavg()[0]:.2f})"
        )

    asyncio.run(run())


def main() -> int:
    from embcache.cli.redis_peers import LocalServer

    server = LocalServer()
    if sys.argv[1:2] == ["--wall"]:
        try:
            wall(server.port, int(sys.argv[2]) if len(sys.argv) > 2 else 30)
        finally:
            server.stop()
        return 0
    try:
        per = {}
        for which in ("mget", "get_many"):
            low, high = instructions(which, server.port, 2), instructions(which, server.port, 22)
            per[which] = (high - low) / 20
            print(f"{which:9s} {per[which] / 1e6:6.1f} M instructions per batch")
        print(f"get_many / mget: {per['get_many'] / per['mget']:.2f}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
