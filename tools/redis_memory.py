"""Redis memory per 768-d vector per storage, as a RedisTier writes them.

    python tools/redis_memory.py [N]      # needs redis-server; N vectors per storage (2000)

Starts a private redis-server (persistence off) on a free 127.0.0.1 port, writes
N vectors per storage through ``RedisTier(storage=...)`` (keys of one model under
one prefix, as a cache writes them) and reports, per storage, the value's
length, the median ``MEMORY USAGE`` of its keys (key, value and Redis' own
per-key overhead, as Redis accounts them) and the growth of INFO's
``used_memory`` per vector (that plus the main dictionary's share), then stops
the server.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STORAGES = ("float32", "float16", "bfloat16", "int8")
DIM = 768


async def measure(port: int, n: int) -> None:
    from redis.asyncio import Redis

    from embcache import CacheKey
    from embcache._core import row_bytes
    from embcache.redis import RedisTier

    client = Redis(host="127.0.0.1", port=port)
    rows = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    print(f"Redis memory per {DIM}-d vector, {n} vectors per storage (redis-server, jemalloc)")
    print(
        f"{'storage':9s} {'value bytes':>11s} {'MEMORY USAGE':>13s} {'used_memory / vector':>21s}"
    )
    try:
        for storage in STORAGES:
            await client.flushall()
            before = int((await client.info("memory"))["used_memory"])
            tier = RedisTier(client, storage=storage, timeout=30)
            keys = [CacheKey.from_text(f"document {i}", "all-MiniLM-L6-v2") for i in range(n)]
            await tier.put_many(keys, rows)
            after = int((await client.info("memory"))["used_memory"])
            rkeys = [tier.redis_key(k) for k in keys]
            usage = [int(await client.memory_usage(k, samples=0) or 0) for k in rkeys]
            value = await client.get(rkeys[0])
            assert value is not None and len(value) == 12 + row_bytes(storage, DIM)
            per = (after - before) / n
            print(f"{storage:9s} {len(value):11d} {statistics.median(usage):13.0f} {per:21.0f}")
    finally:
        await client.aclose()


def main() -> int:
    from embcache.cli.redis_peers import LocalServer

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    server = LocalServer()
    try:
        asyncio.run(measure(server.port, n))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
