"""Speed of SharedEmbeddingCache against SyncEmbeddingCache, interleaved samples.

    python tools/shared_speed.py [--dim 768] [--rounds 7] [--seconds 1.5]

Prints, per figure, the median over rounds of each contender and their ratio:
- get hit: ns per get of a present key (same keys, same dim, float32 rows);
- get_many: ns per row of a 256-key get_many of present keys;
- throughput: operations per second of 1 process and of 2 processes on one
  segment, all gets, then 90% get / 10% put (processes forked, each running
  for --seconds; the 1- and 2-process runs alternate round by round).
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import secrets
import statistics
import time

import numpy as np

from embcache import CacheKey, SharedEmbeddingCache, SyncEmbeddingCache

KEYS = 4000


def per_op_ns(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / n


def run_workers(
    cache: SharedEmbeddingCache,
    keys: list[CacheKey],
    rows: np.ndarray,
    processes: int,
    put_share: float,
    seconds: float,
) -> float:
    board = np.frombuffer(mmap.mmap(-1, 8 * processes), dtype=np.int64)
    pids = []
    for w in range(processes):
        pid = os.fork()
        if pid == 0:
            rng = random.Random(w)
            n = 0
            end = time.perf_counter() + seconds
            get, put = cache.get, cache.put
            while time.perf_counter() < end:
                for _ in range(200):
                    i = rng.randrange(KEYS)
                    if put_share and rng.random() < put_share:
                        put(keys[i], rows[i])
                    else:
                        get(keys[i])
                n += 200
            board[w] = n
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return float(board.sum()) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    dim = args.dim
    rows = np.random.default_rng(0).standard_normal((KEYS, dim)).astype(np.float32)
    keys = [CacheKey(f"doc-{i}", "bench") for i in range(KEYS)]
    name = f"embcache-bench-{os.getpid()}-{secrets.token_hex(3)}"
    mb = KEYS * 2 * (dim * 4 + 200) / 2**20
    local = SyncEmbeddingCache(KEYS * 2, None, mb, dim=dim)
    shared = SharedEmbeddingCache(name, KEYS * 2, None, mb, dim=dim)
    try:
        local.put_many(keys, rows)
        shared.put_many(keys, rows)
        assert len(shared) == KEYS
        order = [keys[i] for i in np.random.default_rng(1).permutation(KEYS)]
        batches = [order[i : i + 256] for i in range(0, KEYS - 255, 256)]
        out = np.empty((256, dim), np.float32)
        figures: dict[str, dict[str, list[float]]] = {"get hit ns": {}, "get_many ns/row": {}}
        for _ in range(args.rounds):
            for label, cache in (("sync", local), ("shared", shared)):
                get = cache.get

                def gets(get=get) -> None:  # type: ignore[no-untyped-def]
                    for k in order:
                        get(k)

                figures["get hit ns"].setdefault(label, []).append(per_op_ns(gets, KEYS))
                many = cache.get_many

                def getmany(many=many) -> None:  # type: ignore[no-untyped-def]
                    for b in batches:
                        many(b, out=out)

                figures["get_many ns/row"].setdefault(label, []).append(
                    per_op_ns(getmany, 256 * len(batches))
                )
        for figure, by in figures.items():
            sync, mine = statistics.median(by["sync"]), statistics.median(by["shared"])
            print(f"{figure:18} sync {sync:9.0f}  shared {mine:9.0f}  ratio {mine / sync:.2f}x")
        for put_share, label in ((0.0, "all gets"), (0.1, "90% get / 10% put")):
            one: list[float] = []
            two: list[float] = []
            for _ in range(max(1, args.rounds // 2)):
                one.append(run_workers(shared, keys, rows, 1, put_share, args.seconds))
                two.append(run_workers(shared, keys, rows, 2, put_share, args.seconds))
            a, b = statistics.median(one), statistics.median(two)
            print(
                f"throughput {label:18} 1 process {a:10.0f}/s  2 processes {b:10.0f}/s  "
                f"scaling {b / a:.2f}x"
            )
    finally:
        shared.close()
        SharedEmbeddingCache.unlink(name)


if __name__ == "__main__":
    main()
