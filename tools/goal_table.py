"""The goal table of docs/performance.md: embcache against its fastest peer, the default cache
(``dim`` not given) beside a fixed-dim one, from ``embcache check --compare``'s
own harness (embcache.cli.compare.measure_against_peers), run several times.

    python -m tools.goal_table [--runs 3] [--repeats 9] [--ops 10000] [--dim 768]

Prints a Markdown table ready to paste: per figure, the goal and the range of
the ratio embcache / fastest peer over the runs, for each cache; a figure whose
worst run misses its goal is marked **missed** (and says how many runs missed).
How it measures: each run builds the inputs, then, per figure, times every
contender once per round ("default", "dim=N", then each installed peer, one
after the other), ``--repeats`` rounds after a warm-up round; a contender's
figure is its best round. Then the command, the peers' versions and the load.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time

from embcache.cli.compare import DEFAULT, FIXED, GOALS, PER_OP, measure_against_peers
from embcache.cli.peers import PEERS, available_peers
from embcache.cli.workloads import comparison_inputs

TITLES = {
    "put_new": "put of a new key into a fresh cache",
    "get_hit": "get hit, new array",
    "put_full": "put into a full cache (each put evicts)",
    "get_miss": "get miss",
    "batch_get": "get_many of 1,000 keys, per row",
}


def _cell(ratios: list[float], goal: float) -> str:
    text = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"
    missed = sum(r > goal for r in ratios)
    if not missed:
        return text
    runs = "" if missed == len(ratios) else f" in {missed} of {len(ratios)} runs"
    return f"**{text} missed{runs}**"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=9, help="rounds per figure and run (9)")
    p.add_argument("--ops", type=int, default=10_000, help="keys per timed run (10,000)")
    p.add_argument("--dim", type=int, default=768)
    args = p.parse_args(argv)
    peers = available_peers()
    if not peers:
        print("no peer cache installed: pip install cachebox lru-dict cachetools", file=sys.stderr)
        return 2
    fixed = FIXED.replace("N", str(args.dim))
    ratios: dict[tuple[str, str], list[float]] = {}
    t0 = time.monotonic()
    inp = comparison_inputs(args.dim, args.ops)
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs} ...", file=sys.stderr)
        samples = measure_against_peers(inp, peers, args.repeats)
        for key in PER_OP:
            best_peer = min(samples[key][p].best for p in peers)
            for name in (DEFAULT, fixed):
                ratios.setdefault((key, name), []).append(samples[key][name].best / best_peer)
    seconds = time.monotonic() - t0
    print(
        f"| figure (ratio embcache / best peer) | goal | dim=None (default), {args.runs} runs "
        f"| dim={args.dim}, {args.runs} runs |"
    )
    print("| --- | ---: | ---: | ---: |")
    for key in PER_OP:
        goal = GOALS[key].goal
        print(
            f"| {TITLES[key]} | ≤ {goal:g} | {_cell(ratios[(key, DEFAULT)], goal)} "
            f"| {_cell(ratios[(key, fixed)], goal)} |"
        )
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(
        f"`python -m tools.goal_table{' ' + argv_text if argv_text else ''}`: {args.runs} runs "
        f"of {args.repeats} interleaved rounds per figure, {args.ops:,} keys in random order, "
        f"dim {args.dim}; peers: "
        + ", ".join(f"{name} {_version(name)}" for name in peers)
        + (
            f" ({', '.join(sorted(set(PEERS) - set(peers)))} not installed)"
            if set(PEERS) - set(peers)
            else ""
        )
        + f"; Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{load:.1f} at the end; {seconds:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
