"""Client-side instruction counts of one 1,000-key dim-768 batch read from Redis:
a raw redis-py MGET of embcache's bytes vs EmbeddingCache.get_many through a
RedisTier (in-process tier emptied first), under valgrind's callgrind, which
a machine's load does not change. Starts a private redis-server (persistence
off) on a free 127.0.0.1 port and stops it.

    python tools/redis_callgrind.py          # needs valgrind and redis-server

Each side runs 2 and 22 batches in fresh processes; the difference over 20 is
what one batch costs (imports and setup cancel out).
"""

from __future__ import annotations

import re
import subprocess
import sys

CHILD = r"""
import asyncio, sys
from redis.asyncio import Redis
from embcache import CacheKey, EmbeddingCache
from embcache.redis import RedisTier
from embcache._tools.redis_peers import workload

async def main(which, port, batches):
    client = Redis(host="127.0.0.1", port=port)
    tier = RedisTier(client, timeout_seconds=60)
    cache = EmbeddingCache(3000, None, 64, dim=768, tier=tier)
    texts, rows = workload(1000, 768)
    keys = [CacheKey.from_text(t, "m") for t in texts]
    await cache.put_many(keys, rows)
    rkeys = [tier.redis_key(k) for k in keys]
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
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", proc.stderr)
    assert found, proc.stderr[-2000:]
    return int(found.group(1))


def main() -> int:
    from embcache._tools.redis_peers import LocalServer

    server = LocalServer()
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
