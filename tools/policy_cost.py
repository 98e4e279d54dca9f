"""Per-operation cost of policy="tinylfu" beside "lru" and theine (docs/performance.md,
"Eviction policies"), two ways, both over benchmarks/bench_hitrate.py's PolicyCost.

    python tools/policy_cost.py time [ROUNDS]
        best of ROUNDS interleaved rounds of each loop (1,000 operations each),
        ns per operation, and the ratios.

    PYTHONHASHSEED=0 valgrind --tool=callgrind \\
        --toggle-collect=__pyx_pw_8embcache_5_core_18SyncEmbeddingCache_7get \\
        python tools/policy_cost.py count tinylfu get_hit 20000
        (use ..._5put for put_new / put_full): instructions collected / 20,000 is
        the per-operation count of the core's get or put. The fill uses put_many,
        which the toggle does not collect.
"""

from __future__ import annotations

import sys
from pathlib import Path
from time import perf_counter

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._util import make_keys, make_vector, shuffled  # noqa: E402
from benchmarks.bench_hitrate import DIM, ENTRIES, PolicyCost  # noqa: E402
from embcache import SyncEmbeddingCache  # noqa: E402

METHODS = ("time_get_hit", "time_put_new", "time_put_full")


def timed(rounds: int) -> None:
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for policy in ("lru", "tinylfu", "theine"):
            for method in METHODS:
                bench = PolicyCost()
                bench.setup(policy)
                start = perf_counter()
                getattr(bench, method)(policy)
                per_op = (perf_counter() - start) / 1000
                best[policy, method] = min(best.get((policy, method), 1.0), per_op)
    for method in METHODS:
        lru, tiny, theine = (best[p, method] * 1e9 for p in ("lru", "tinylfu", "theine"))
        print(f"{method:14s} lru {lru:7.1f} ns  tinylfu {tiny:7.1f} ns  theine {theine:8.1f} ns"
              f"  tinylfu/lru {tiny / lru:.3f}")


def count(policy: str, op: str, n: int) -> None:
    vector = make_vector(DIM)
    cache = SyncEmbeddingCache(ENTRIES if op != "put_new" else 100 * ENTRIES, None, 4096,
                               dim=DIM, policy=policy)
    keys = make_keys(ENTRIES)
    if op != "put_new":
        for s in range(0, ENTRIES, 1000):
            cache.put_many(keys[s:s + 1000], np.tile(vector, (1000, 1)))
    if op == "get_hit":
        order = shuffled(keys)
        get = cache.get
        for i in range(n):
            get(order[i % ENTRIES])
    else:
        put = cache.put
        for k in make_keys(n, start=ENTRIES):
            put(k, vector)


if __name__ == "__main__":
    if sys.argv[1] == "time":
        timed(int(sys.argv[2]) if len(sys.argv) > 2 else 30)
    else:
        count(sys.argv[2], sys.argv[3], int(sys.argv[4]))
