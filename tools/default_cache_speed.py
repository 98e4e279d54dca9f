"""embcache against cachebox and lru-dict, side by side with samples interleaved,
for the default cache (dim=None) or a fixed-dim one.

    PYTHONPATH=. python tools/default_cache_speed.py [--dim-arg none|768] [--rounds 9]

(without PYTHONPATH, Python imports the embcache installed in the environment,
not the tree's; the first line printed names the one measured).

Keys are 10,000 CacheKeys in random order, vectors dim 768 float32. Peers store
``v.copy()`` and return ``x.copy()``; both sides discard what a get returns.
For each figure, each round times embcache and then every peer (best of the
rounds per side):

- put new: 10,000 puts of new keys into a cache made for the round (its pages
  not yet faulted), with the process's minor page faults counted over the fill;
- get hit / get miss: 10,000 gets of present / absent keys;
- put full: 10,000 puts of new keys into a full cache (each put evicts);
- get_many: 10 lookups of 1,000 present keys into one (1000, dim) matrix, per
  row (peers: a loop of copying gets and np.stack).

Prints ns per op (per row for get_many) for each side and the ratio embcache /
best peer against its goal. Wall times on a shared machine: read several runs.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import time
from typing import Any, Callable

import numpy as np

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, SyncEmbeddingCache

N = 10_000
BATCH = 1_000
DIM = 768
GOALS = {"put new": 0.6, "get hit": 0.5, "put full": 0.5, "get miss": 1.0, "get_many/row": 0.25}


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim-arg", default="none", help="the cache's dim=: none or a number")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument(
        "--slice",
        type=int,
        default=0,
        help="time loops in slices of this many ops, each slice's best over the "
        "rounds summed (steadier on a loaded machine); 0: whole loops",
    )
    args = ap.parse_args()
    fixed = None if args.dim_arg == "none" else int(args.dim_arg)

    rng = np.random.default_rng(7)
    pool = [rng.standard_normal(DIM).astype(np.float32) for _ in range(256)]
    keys = [CacheKey(f"k{i}", "m") for i in range(3 * N)]
    order = list(range(N))
    random.Random(3).shuffle(order)
    new_keys = [keys[i] for i in order]
    put_pairs = [(k, pool[i % len(pool)]) for i, k in enumerate(new_keys)]
    fill_pairs = [(keys[N + i], pool[i % len(pool)]) for i in range(N)]
    miss_keys = [keys[2 * N + i] for i in range(N)]
    hit_keys = new_keys
    batches = [tuple(hit_keys[j : j + BATCH]) for j in range(0, N, BATCH)]
    mb = N * (DIM * 4 + ENTRY_OVERHEAD_BYTES + 64) / 2**20 + 1

    def new_embcache() -> Any:
        return SyncEmbeddingCache(N, None, mb, dim=fixed)

    import cachebox
    import lru

    def e_puts(c: Any, pairs: Any) -> None:
        put = c.put
        for k, v in pairs:
            put(k, v)

    def e_gets(c: Any, ks: Any) -> None:
        get = c.get
        for k in ks:
            get(k)

    def e_many(c: Any, bs: Any) -> None:
        gm = c.get_many
        for b in bs:
            gm(b)

    def m_puts(m: Any, pairs: Any) -> None:
        for k, v in pairs:
            m[k] = v.copy()

    def m_gets(m: Any, ks: Any) -> None:
        get = m.get
        for k in ks:
            x = get(k)
            None if x is None else x.copy()

    def m_many(m: Any, bs: Any) -> None:
        get = m.get
        stack = np.stack
        for b in bs:
            stack([get(k).copy() for k in b])

    sides: list[tuple[str, Callable[[], Any], tuple[Any, Any, Any]]] = [
        ("embcache", new_embcache, (e_puts, e_gets, e_many)),
        ("cachebox", lambda: cachebox.LRUCache(N), (m_puts, m_gets, m_many)),
        ("lru-dict", lambda: lru.LRU(N), (m_puts, m_gets, m_many)),
    ]
    # best[name][fig][j]: the best time of slice j of the figure's loop over the rounds
    best: dict[str, dict[str, list[float]]] = {name: {} for name, _, _ in sides}
    faults: list[float] = []
    step = args.slice or N

    def run(
        fig: str, name: str, loop: Callable[[Any, Any], None], obj: Any, items: Any, per: int = 0
    ) -> None:
        """Time `loop(obj, part)` over `items` in slices of `per` (default: --slice)."""
        per = per or step
        times = best[name].setdefault(fig, [])
        for j, at in enumerate(range(0, len(items), per)):
            part = items[at : at + per]
            t0 = time.perf_counter_ns()
            loop(obj, part)
            dt = time.perf_counter_ns() - t0
            if j == len(times):
                times.append(dt)
            else:
                times[j] = min(times[j], dt)

    def per_op(name: str, fig: str) -> float:
        return sum(best[name][fig]) / N

    gc.disable()
    # put new into a fresh cache
    for _ in range(args.rounds):
        for name, new, (puts, _, _) in sides:
            c = new()
            f0 = minor_faults()
            run("put new", name, puts, c, put_pairs)
            if name == "embcache":
                faults.append(minor_faults() - f0)
            del c
    # gets on a filled cache
    filled = {}
    for name, new, (puts, _, _) in sides:
        filled[name] = c = new()
        puts(c, put_pairs)
    for fig, ks in (("get hit", hit_keys), ("get miss", miss_keys)):
        for _ in range(args.rounds):
            for name, _, (_, gets, _) in sides:
                run(fig, name, gets, filled[name], ks)
    for _ in range(args.rounds):
        for name, _, (_, _, many) in sides:
            run("get_many/row", name, many, filled[name], batches, 1 if args.slice else 0)
    del filled
    # put into a full cache
    for _ in range(args.rounds):
        for name, new, (puts, _, _) in sides:
            c = new()
            puts(c, fill_pairs)
            run("put full", name, puts, c, put_pairs)
            del c
    gc.enable()

    import embcache

    print(f"embcache from {embcache.__file__}")
    how = (
        f"each figure the sum over its loop's slices of {args.slice:,} ops (get_many: of one "
        "batch) of the slice's best"
        if args.slice
        else "best of the whole loops"
    )
    print(f"dim={fixed}, {N:,} keys, dim {DIM}, {args.rounds} interleaved rounds, {how} (ns/op)")
    print(f"{'figure':14} {'embcache':>9} {'cachebox':>9} {'lru-dict':>9} {'ratio':>6} {'goal':>6}")
    for fig, goal in GOALS.items():
        e, cb, ld = (per_op(name, fig) for name in ("embcache", "cachebox", "lru-dict"))
        r = e / min(cb, ld)
        verdict = "ok" if r <= goal else "MISSED"
        print(f"{fig:14} {e:9.0f} {cb:9.0f} {ld:9.0f} {r:6.2f} {goal:6.2f} {verdict}")
    print(f"minor faults per {N:,}-entry fill (embcache): min {min(faults)}, max {max(faults)}")


if __name__ == "__main__":
    main()
