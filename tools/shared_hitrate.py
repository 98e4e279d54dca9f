"""Hit rate of SharedEmbeddingCache (per-stripe CLOCK) beside SyncEmbeddingCache's one
global LRU, on the project's reproducible traces (benchmarks/common/hitrate.py).

    python tools/shared_hitrate.py [--sizes 2000,20000]

Each trace is replayed read-through (get, then put on a miss) through a cache of
each size; the table gives both hit rates (percent), the difference in points
and the shared cache's stripes.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common.hitrate import TRACES, embcache_hit_rate, trace  # noqa: E402
from embcache import CacheKey, SharedEmbeddingCache  # noqa: E402


def shared_hit_rate(ids: np.ndarray, size: int) -> tuple[float, int]:
    unique, index = np.unique(ids, return_inverse=True)
    keys = [CacheKey(f"doc-{i}", "hitrate") for i in unique.tolist()]
    name = f"embcache-hitrate-{os.getpid()}-{secrets.token_hex(3)}"
    cache = SharedEmbeddingCache(name, size, None, 64.0, dim=1)
    try:
        get, put = cache.get, cache.put
        vector = np.ones(1, np.float32)
        hits = 0
        for i in index.tolist():
            k = keys[i]
            if get(k) is None:
                put(k, vector)
            else:
                hits += 1
        return hits / len(ids), cache.stripes
    finally:
        cache.close()
        SharedEmbeddingCache.unlink(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000")
    args = parser.parse_args()
    print("| trace | size | stripes | global LRU | shared CLOCK | points |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for size in (int(s) for s in args.sizes.split(",")):
        for name in TRACES:
            ids = trace(name)
            lru = embcache_hit_rate(ids, size, "lru")
            mine, stripes = shared_hit_rate(ids, size)
            print(
                f"| {name} | {size} | {stripes} | {100 * lru:.2f} | {100 * mine:.2f} | "
                f"{100 * (mine - lru):+.2f} |"
            )


if __name__ == "__main__":
    main()
