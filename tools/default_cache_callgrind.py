"""Instructions per operation of the default cache (dim=None) or a fixed-dim
one, under callgrind: the script runs the timed loop `reps` times after the
same setup, and the per-op count is the difference between two runs.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python tools/default_cache_callgrind.py OP DIM REPS

OP: get_hit, put_new, put_full, get_many (per row); DIM: none or a number;
REPS: 1 to 3. Run it with PYTHONPATH set to the tree whose embcache to count.
Run it with REPS = 1 and REPS = 3 and divide the difference of the two totals
("Collected" line) by 2 x 10,000 ops (get_many: rows).
"""

from __future__ import annotations

import random
import sys

import numpy as np

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, SyncEmbeddingCache

N = 10_000
D = 768


def main() -> None:
    op, dim_arg, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fixed = None if dim_arg == "none" else int(dim_arg)
    mb = N * (D * 4 + ENTRY_OVERHEAD_BYTES + 64) / 2**20 + 1
    rng = np.random.default_rng(7)
    pool = [rng.standard_normal(D).astype(np.float32) for _ in range(64)]
    keys = [CacheKey(f"k{i}", "m") for i in range(N * 5)]  # the same setup for every reps
    random.Random(3).shuffle(keys)
    c = SyncEmbeddingCache(N, None, mb, dim=fixed)
    if op != "put_new":
        for i in range(N):
            c.put(keys[i], pool[i % 64])
    hit = keys[:N]
    put = c.put
    get = c.get
    for r in range(reps):
        if op == "get_hit":
            for k in hit:
                get(k)
        elif op == "get_many":
            for j in range(0, N, 1000):
                c.get_many(hit[j : j + 1000])
        elif op in ("put_new", "put_full"):
            if op == "put_new":
                c = SyncEmbeddingCache(N, None, mb, dim=fixed)
                put = c.put
            base = N * (r + 1)
            for i in range(N):
                put(keys[base + i], pool[i % 64])


if __name__ == "__main__":
    main()
