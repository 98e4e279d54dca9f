"""Speed of SharedEmbeddingCache against SyncEmbeddingCache, interleaved samples.

    python tools/shared_speed.py [--dim 768] [--storage float32] [--rounds 7]
                                 [--seconds 1.5] [--only get|get_many|throughput]
    python tools/shared_speed.py --callgrind [--dim 768] [--storage float32]

Prints, per figure, the median over rounds of each contender and their ratio
(with the median of the rounds' own ratios, and best round against best round,
which a loaded machine disturbs least):
- get hit: ns per get of a present key (same keys, same dim and storage);
- get_many: ns per row of a 256-key get_many(out=) of present keys;
- throughput: operations per second of 1 process and of 2 processes on one
  segment, all gets, then 90% get / 10% put (processes forked, each running
  for --seconds; the 1- and 2-process runs alternate round by round).

Wall times on a loaded machine move from run to run; --callgrind gives figures
that repeat: instructions per get and per get_many row of each contender, each
counted by valgrind's callgrind (valgrind on the PATH) inside the method calls
only (--toggle-collect on each class's method wrapper: start-up, setup and the
loop around the calls are not counted), the contenders one after the other;
the same command gives the same figures to within 0.1%. Instructions are not
time (a long memcpy is few instructions): they show what a change removes.
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
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


def count_child(contender: str, op: str, dim: int, storage: str, reps: int) -> None:
    """Under callgrind: the setup, then the `op` loop `reps` times on `contender`."""
    rows = np.random.default_rng(0).standard_normal((KEYS, dim)).astype(np.float32)
    keys = [CacheKey(f"doc-{i}", "bench") for i in range(KEYS)]
    mb = KEYS * 2 * (dim * 4 + 200) / 2**20
    name = f"embcache-count-{os.getpid()}-{secrets.token_hex(3)}"
    if contender == "sync":
        cache: SyncEmbeddingCache | SharedEmbeddingCache = SyncEmbeddingCache(
            KEYS * 2, None, mb, dim=dim, storage=storage
        )
    else:
        cache = SharedEmbeddingCache(name, KEYS * 2, None, mb, dim=dim, storage=storage)
    try:
        cache.put_many(keys, rows)
        order = [keys[i] for i in np.random.default_rng(1).permutation(KEYS)]
        batches = [order[i : i + 256] for i in range(0, KEYS - 255, 256)]
        out = np.empty((256, dim), np.float32)
        for _ in range(reps):
            if op == "get_many":
                for b in batches:
                    cache.get_many(b, out=out)
            else:
                for k in order:
                    cache.get(k)
    finally:
        if contender == "shared":
            cache.close()  # type: ignore[union-attr]
            SharedEmbeddingCache.unlink(name)


TOGGLE = {op: f"--toggle-collect=__pyx_pw_*EmbeddingCache_*{op}" for op in ("get", "get_many")}
"""The method wrappers callgrind counts inside (the Cython wrapper of the method in
either module: argument handling, the lookups, the copies and what they call).
callgrind honours one --toggle-collect, so one pattern matches both classes."""


def collected(contender: str, op: str, dim: int, storage: str) -> int:
    """Instructions callgrind counts inside `op` calls of one count_child run."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            "--collect-atstart=no",
            TOGGLE[op],
            sys.executable,
            __file__,
            "--count-child",
            contender,
            op,
            str(dim),
            storage,
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {done.stderr[-2000:]}")
    return int(found.group(1))


def callgrind_figures(dim: int, storage: str) -> None:
    per = {"get": KEYS, "get_many": 256 * len(range(0, KEYS - 255, 256))}
    for op in ("get", "get_many"):
        counts = {c: collected(c, op, dim, storage) / per[op] for c in ("sync", "shared")}
        unit = "instr/get" if op == "get" else "instr/row"
        print(
            f"{op:9} dim {dim} {storage:8} sync {counts['sync']:7.0f}  shared "
            f"{counts['shared']:7.0f} {unit}  ratio {counts['shared'] / counts['sync']:.2f}x"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--count-child":
        contender, op, dim, storage, reps = sys.argv[2:7]
        count_child(contender, op, int(dim), storage, int(reps))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--storage", default="float32")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--only", choices=("get", "get_many", "throughput"))
    parser.add_argument("--callgrind", action="store_true")
    args = parser.parse_args()
    if args.callgrind:
        callgrind_figures(args.dim, args.storage)
        return
    dim = args.dim
    rows = np.random.default_rng(0).standard_normal((KEYS, dim)).astype(np.float32)
    keys = [CacheKey(f"doc-{i}", "bench") for i in range(KEYS)]
    name = f"embcache-bench-{os.getpid()}-{secrets.token_hex(3)}"
    mb = KEYS * 2 * (dim * 4 + 200) / 2**20
    local = SyncEmbeddingCache(KEYS * 2, None, mb, dim=dim, storage=args.storage)
    shared = SharedEmbeddingCache(name, KEYS * 2, None, mb, dim=dim, storage=args.storage)
    try:
        local.put_many(keys, rows)
        shared.put_many(keys, rows)
        assert len(shared) == KEYS
        order = [keys[i] for i in np.random.default_rng(1).permutation(KEYS)]
        batches = [order[i : i + 256] for i in range(0, KEYS - 255, 256)]
        out = np.empty((256, dim), np.float32)
        figures: dict[str, dict[str, list[float]]] = {"get hit ns": {}, "get_many ns/row": {}}
        for _ in range(args.rounds if args.only in (None, "get", "get_many") else 0):
            for label, cache in (("sync", local), ("shared", shared)):
                get = cache.get

                def gets(get=get) -> None:  # type: ignore[no-untyped-def]
                    for k in order:
                        get(k)

                if args.only != "get_many":
                    figures["get hit ns"].setdefault(label, []).append(per_op_ns(gets, KEYS))
                many = cache.get_many

                def getmany(many=many) -> None:  # type: ignore[no-untyped-def]
                    for b in batches:
                        many(b, out=out)

                if args.only != "get":
                    figures["get_many ns/row"].setdefault(label, []).append(
                        per_op_ns(getmany, 256 * len(batches))
                    )
        for figure, by in figures.items():
            if not by:
                continue
            sync, mine = statistics.median(by["sync"]), statistics.median(by["shared"])
            pairs = statistics.median(b / a for a, b in zip(by["sync"], by["shared"]))
            best = min(by["shared"]) / min(by["sync"])
            print(
                f"{figure:18} sync {sync:9.0f}  shared {mine:9.0f}  ratio {mine / sync:.2f}x  "
                f"(median of round ratios {pairs:.2f}x, best against best {best:.2f}x)"
            )
        shares = ((0.0, "all gets"), (0.1, "90% get / 10% put"))
        for put_share, label in shares if args.only in (None, "throughput") else ():
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
