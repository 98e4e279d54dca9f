"""Page faults of the goal table's "put of a new key into a fresh cache" round,
per contender, before and after one run of the other figures in the same process.

    python -m tools.put_new_faults [--rounds 3]

Each round makes a brand-new cache (embcache: the default one and dim=768; each
installed peer) and times nothing: it counts the minor page faults of the
process (``getrusage``) while the goal table's put loop (embcache.cli.peers.LOOPS)
stores 10,000 vectors of dim 768 into it, then frees the cache. Between the two
passes, one round of every figure runs (embcache.cli.compare.measure_against_peers,
as a goal-table run does). What it shows: a peer's copies live on the C heap, and
whether they fault depends on what the heap kept from earlier work in the process;
embcache's new cache maps fresh memory, so its count does not move.
"""

from __future__ import annotations

import argparse
import resource
import sys
from typing import Any, Callable

from embcache import SyncEmbeddingCache
from embcache.cli.compare import measure_against_peers
from embcache.cli.peers import LOOPS, available_peers, make_mapping
from embcache.cli.workloads import budget_mb, comparison_inputs

DIM = 768
OPS = 10_000


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    inp = comparison_inputs(DIM, OPS)
    peers = available_peers()
    makers: dict[str, tuple[Callable[[], Any], str]] = {
        "embcache": (lambda: SyncEmbeddingCache(OPS, None, budget_mb(OPS, DIM)), "embcache"),
        f"embcache dim={DIM}": (
            lambda: SyncEmbeddingCache(OPS, None, budget_mb(OPS, DIM), dim=DIM),
            "embcache",
        ),
    }
    for name in peers:
        makers[name] = ((lambda name=name: make_mapping(name, OPS)), name)  # type: ignore[misc]
    for label in ("first, in a new process", "after one run of every figure"):
        counts: dict[str, list[int]] = {name: [] for name in makers}
        for _ in range(args.rounds):
            for name, (new, loops) in makers.items():
                cache = new()
                before = _faults()
                LOOPS[loops].puts(cache, inp.put_pairs)
                counts[name].append(_faults() - before)
                del cache
        print(f"minor page faults per round of {OPS:,} puts, {label}:")
        for name, c in counts.items():
            print(f"  {name:20s} {', '.join(f'{n:,}' for n in c)}")
        if label.startswith("first"):
            measure_against_peers(inp, peers, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
