"""Speed and size of each row storage against float32 rows in the same cache,
over benchmarks/bench_storage.py's loops (dim 768).

    python tools/storage_speed.py [--runs 3] [--rounds 15] [--kernels portable|avx2|avx512]

Per run, ``--rounds`` rounds; in each round every figure (get hit, put of a new
key, get_many of 1,000 keys per row) times every storage one after the other
(the order rotating from round to round), each one timed call of its asv
benchmark after its setup. A storage's figure in a run is its best round, and
the ratio is that over float32's best in the same run. Prints a Markdown table
of the ratios over the runs (the range; a goal missed in any run is marked
**missed**, saying in how many), the best times, then the memory table:
accounted bytes per entry, entries per GiB (a 64 MiB cache filled until it
evicts, x 16) and snapshot bytes per entry, and the command. ``--kernels``
limits the row codecs to the portable C kernels or to AVX2 (default: the best
this CPU runs), to measure what a CPU without the wider ones gets.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_storage  # noqa: E402
from benchmarks.bench_storage import (  # noqa: E402
    BATCH,
    DIM,
    OPS,
    STORAGES,
    StorageGetHit,
    StorageGetMany,
    StoragePut,
)
from embcache._core import _codec_kernels, row_bytes  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """One timed figure: its asv benchmark class and method, goal and divisor."""

    title: str
    bench: Callable[[], Any]
    method: str
    goal: float
    per: int


FIGURES = {
    "get_hit": Figure("get hit (a new float32 array)", StorageGetHit, "time_get_hit", 1.1, OPS),
    "put": Figure("put of a new key", StoragePut, "time_put", 1.2, OPS),
    "get_many": Figure(
        f"get_many of {BATCH:,} keys, per row", StorageGetMany, "time_get_many", 1.2, BATCH
    ),
}
COMPACT = [s for s in STORAGES if s != "float32"]


def one_call(figure: Figure, storage: str) -> float:
    """Seconds per operation (per row) of one timed call of `figure` on `storage`."""
    bench = figure.bench()
    bench.setup(storage)
    method = getattr(bench, figure.method)
    start = perf_counter()
    method(storage)
    return (perf_counter() - start) / figure.per


def run_once(rounds: int) -> dict[tuple[str, str], float]:
    """The best seconds per operation of each (figure, storage) over `rounds`
    interleaved rounds."""
    best: dict[tuple[str, str], float] = {}
    for name, figure in FIGURES.items():
        for storage in STORAGES:  # warm-up: build the caches, first touches
            one_call(figure, storage)
        for r in range(rounds):
            order = STORAGES[r % len(STORAGES) :] + STORAGES[: r % len(STORAGES)]
            for storage in order:
                seconds = one_call(figure, storage)
                best[name, storage] = min(best.get((name, storage), seconds), seconds)
    return best


def cell(ratios: list[float], goal: float) -> str:
    """The range of `ratios`, marked **missed** when any is above `goal`."""
    text = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"
    missed = sum(r > goal for r in ratios)
    if not missed:
        return text
    runs = "" if missed == len(ratios) else f" in {missed} of {len(ratios)} runs"
    return f"**{text} missed{runs}**"


def speed_table(runs: list[dict[tuple[str, str], float]]) -> list[str]:
    """The ratio table (storage / float32, range over `runs`) and the best times."""
    n = len(runs)
    lines = [
        "| figure (ratio storage / float32 rows) | goal | "
        + " | ".join(f"{s}, {n} run{'s' if n > 1 else ''}" for s in COMPACT)
        + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in COMPACT) + " |",
    ]
    for name, figure in FIGURES.items():
        cells = []
        for storage in COMPACT:
            ratios = [best[name, storage] / best[name, "float32"] for best in runs]
            cells.append(cell(ratios, figure.goal))
        lines.append(f"| {figure.title} | ≤ {figure.goal:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| best ns per operation (per row), over the runs | " + " | ".join(STORAGES) + " |",
        "| --- | " + " | ".join("---:" for _ in STORAGES) + " |",
    ]
    for name, figure in FIGURES.items():
        lines.append(
            f"| {figure.title} | "
            + " | ".join(f"{min(b[name, s] for b in runs) * 1e9:.1f}" for s in STORAGES)
            + " |"
        )
    return lines


def memory_table() -> list[str]:
    """Row bytes, accounted bytes per entry, entries per GiB and snapshot bytes
    per entry of each storage, at dim 768."""
    per_gib = {s: bench_storage.entries_per_gib(s) for s in STORAGES}
    lines = [
        f"| storage (dim {DIM}) | row bytes | memory per entry (bytes) | entries per GiB "
        "| x float32 | snapshot bytes per entry |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in STORAGES:
        lines.append(
            f"| {s} | {row_bytes(s, DIM):,} | {bench_storage.bytes_per_entry(s):,.0f} "
            f"| {per_gib[s]:,} | {per_gib[s] / per_gib['float32']:.2f} "
            f"| {bench_storage.snapshot_bytes_per_entry(s):,.0f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds per run (15)")
    p.add_argument(
        "--kernels",
        choices=("portable", "avx2", "avx512"),
        default="avx512",
        help="use no better codec kernels than these (avx512: the best this CPU runs)",
    )
    args = p.parse_args(argv)
    if args.runs < 1 or args.rounds < 1:
        p.error("--runs and --rounds must be >= 1")
    kernels = _codec_kernels(args.kernels)
    t0 = time.monotonic()
    runs = []
    try:
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs} ...", file=sys.stderr)
            runs.append(run_once(args.rounds))
        lines = speed_table(runs) + [""] + memory_table()
    finally:
        _codec_kernels("avx512")  # lift the limit again
    for line in lines:
        print(line)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print(
        f"`python tools/storage_speed.py{' ' + argv_text if argv_text else ''}`: {args.runs} "
        f"run{'s' if args.runs > 1 else ''} of {args.rounds} interleaved rounds per figure "
        "(best round per storage), "
        f"dim {DIM}, a cache of {bench_storage.ENTRIES:,} entries, {kernels} codec kernels; Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average {load:.1f} at the "
        f"end; {time.monotonic() - t0:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
