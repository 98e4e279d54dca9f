"""Only the Redis rows of ``embcache check --compare`` (embcache.cli.redis_compare),
printed one per line: the Redis figures of docs/performance.md.

    python -m tools.redis_compare [--repeats N] [--dim D]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from embcache.cli.redis_compare import run_redis_compare
from embcache.cli.report import Progress
from embcache.cli.workloads import CheckConfig


def main(argv: list[str] | None = None) -> int:
    """Measure the Redis rows and print them; 0 unless the arguments are wrong."""
    parser = argparse.ArgumentParser(prog="python -m tools.redis_compare")
    parser.add_argument(
        "--repeats", type=int, default=CheckConfig.make(quick=False, dim=768).compare_repeats
    )
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(
        CheckConfig.make(quick=False, dim=args.dim), compare_repeats=max(1, args.repeats)
    )
    part = run_redis_compare(cfg, Progress(sys.stderr))
    for f in part.figures:
        peers = ", ".join(f"{p} {v:,.0f}" for p, v in f.peers.items())
        ratio = "" if f.ratio is None else f"  ratio {f.ratio:.3f}"
        verdict = "" if f.goal_met is None else f"  goal {'met' if f.goal_met else 'NOT met'}"
        print(f"{f.label}: embcache {f.embcache:,.0f} {f.unit}; {peers}{ratio}{verdict}")
    for note in part.notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
