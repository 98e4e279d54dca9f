"""Instructions per operation of the default cache (dim=None), a fixed-dim one,
or a peer cache, under callgrind: the script runs the goal table's timed loop
(embcache.cli.peers.LOOPS, on embcache.cli.workloads.comparison_inputs: 10,000
keys in random order, dim 768) `reps` times after the same setup, and the
per-op count is the difference between two runs.

    OPENBLAS_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python tools/default_cache_callgrind.py OP CONTENDER REPS

(OPENBLAS_NUM_THREADS=1: numpy's idle BLAS threads otherwise add a few hundred
instructions per op that vary from run to run.)

OP: get_hit, put_new, put_full, get_many (per row); CONTENDER: none (the
default cache), a number (a cache of that fixed dim: 768), or a peer's name
(cachebox, lru-dict, cachetools: its loops store and return private copies,
as in the goal table). REPS: 1 to 3. Run it with PYTHONPATH set to the tree
whose embcache to count. Run it with REPS = 1 and REPS = 3 and divide the
difference of the two totals ("Collected" line) by 2 x 10,000 ops (get_many:
rows). With ``--cache-sim=yes`` the same difference of the D1 and LL miss
counts ("D1 misses", "LLd misses") gives the misses per op.

What each rep does: get_hit looks up the 10,000 keys of a full cache (in
another random order than they were put); get_many looks them up in 10
batches of 1,000; put_new puts them into a brand-new cache (made in the rep,
its construction counted: a few thousand instructions, under 1 per op; every
cache is kept, and the process ends with os._exit, so no rep frees one);
put_full puts them into a cache of 5,000 entries filled once before the reps,
so that every put evicts.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from embcache import SyncEmbeddingCache
from embcache.cli.peers import LOOPS, PEERS, make_mapping
from embcache.cli.workloads import budget_mb, comparison_inputs

N = 10_000
D = 768
BATCH = 1000


def contender(name: str) -> tuple[Callable[[int], Any], str]:
    """A maker of empty caches of a given capacity, and the LOOPS key."""
    if name in PEERS:
        return (lambda cap: make_mapping(name, cap)), name
    fixed = None if name == "none" else int(name)
    return (lambda cap: SyncEmbeddingCache(cap, None, budget_mb(cap, D), dim=fixed)), "embcache"


def main() -> None:
    op, who, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    inp = comparison_inputs(D, N)
    new, loops_name = contender(who)
    loops = LOOPS[loops_name]
    if op == "put_full":
        cache = new(len(inp.fill_pairs))
        loops.puts(cache, inp.fill_pairs)
    else:
        cache = new(N)
        if op != "put_new":
            loops.puts(cache, inp.put_pairs)
    batches = [inp.hit_keys[j : j + BATCH] for j in range(0, N, BATCH)]
    kept = [cache]
    for _ in range(reps):
        if op == "get_hit":
            loops.gets(cache, inp.hit_keys)
        elif op == "get_many":
            for keys in batches:
                loops.get_matrix(cache, keys)
        elif op == "put_new":
            cache = new(N)
            kept.append(cache)
            loops.puts(cache, inp.put_pairs)
        elif op == "put_full":
            loops.puts(cache, inp.put_pairs)
        else:
            raise SystemExit(f"unknown OP {op!r}")
    sys.stdout.flush()
    os._exit(0)  # no teardown: what the reps made is never freed, in any run


if __name__ == "__main__":
    main()
