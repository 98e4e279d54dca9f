"""Where the goal table's "get hit" time goes: the same get loop over the same
cache, once over its 10,000 keys in random order (the goal table's figure: each
get reads a row that is not in the CPU's caches) and once over one key 10,000
times (its row stays in the level-1 cache: what is left is the work of the
call itself), for the default cache and each installed peer, beside the cost
of moving one row in that random order with numpy alone (``numpy.take`` of the
rows from one matrix holding them all: no cache, no key, no Python per row).

    python -m tools.get_hit_split [--rounds 9] [--ops 10000] [--dim 768]

Every round times every contender's two loops and the numpy gather, one after
the other (interleaved, as the goal table does); a figure is its best round.
It prints ns per get for each loop, their difference (the time the get waits
for memory), and each ratio to the fastest peer.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from embcache import SyncEmbeddingCache
from embcache.cli.peers import LOOPS, available_peers, make_mapping
from embcache.cli.workloads import budget_mb, comparison_inputs


def _per_get(gets: Any, cache: Any, keys: list[Any]) -> float:
    start = time.perf_counter_ns()
    gets(cache, keys)
    return (time.perf_counter_ns() - start) / len(keys)


def _per_row(rows: Any, picks: Any, out: Any) -> float:
    start = time.perf_counter_ns()
    np.take(rows, picks, axis=0, out=out)
    return (time.perf_counter_ns() - start) / len(picks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--ops", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=768)
    args = p.parse_args(argv)
    inp = comparison_inputs(args.dim, args.ops)
    peers = available_peers()
    caches: dict[str, tuple[Any, Any]] = {}
    cache = SyncEmbeddingCache(args.ops, None, budget_mb(args.ops, args.dim))
    LOOPS["embcache"].puts(cache, inp.put_pairs)
    caches["embcache (default)"] = (cache, LOOPS["embcache"].gets)
    for name in peers:
        mapping = make_mapping(name, args.ops)
        LOOPS[name].puts(mapping, inp.put_pairs)
        caches[name] = (mapping, LOOPS[name].gets)
    one_key = [inp.hit_keys[0]] * len(inp.hit_keys)
    order = {k: i for i, (k, _) in enumerate(inp.put_pairs)}
    rows = np.stack([v for _, v in inp.put_pairs]).astype(np.float32)
    picks = np.array([order[k] for k in inp.hit_keys])
    gathered = np.empty_like(rows)
    best: dict[str, list[float]] = {name: [float("inf")] * 2 for name in caches}
    floor = float("inf")
    for _ in range(args.rounds):
        for name, (c, gets) in caches.items():
            best[name][0] = min(best[name][0], _per_get(gets, c, inp.hit_keys))
            best[name][1] = min(best[name][1], _per_get(gets, c, one_key))
        floor = min(floor, _per_row(rows, picks, gathered))
    fastest = min((best[name][0], name) for name in peers) if peers else None
    print(
        f"ns per get (best of {args.rounds} interleaved rounds; {args.ops:,} keys, dim {args.dim})"
    )
    print(f"{'contender':<20} {'random keys':>12} {'one key':>10} {'waiting for memory':>19}")
    for name, (random_keys, hot) in best.items():
        ratio = f"  ({random_keys / fastest[0]:.2f}x {fastest[1]})" if fastest else ""
        print(f"{name:<20} {random_keys:>12.0f} {hot:>10.0f} {random_keys - hot:>19.0f}{ratio}")
    print(f"numpy.take of the same rows in the same order: {floor:.0f} ns per row")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
