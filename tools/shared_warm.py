"""The warm-worker recipe, measured: a multiprocessing.Pool of 4 (spawn) serving
embedding requests over one SharedEmbeddingCache, beside the same Pool with a private
SyncEmbeddingCache in each worker.

    python tools/shared_warm.py [--workers 4] [--requests 400] [--batch 16]
                                [--distinct 1000] [--model-ms 1.0] [--dim 768]

The stream: --requests batches of --batch texts drawn (fixed seed, Zipf) from
--distinct texts. Each worker (spawn: a fresh interpreter) opens the cache by name in
the Pool's initializer, as a served worker would, and answers a batch with
``get_or_compute(keys, model)``. The model is a stand-in costing --model-ms per text
(a sleep) and counted per worker: its calls and the texts it embedded.

Printed:
1. per worker: batches served, keys read, hits, model calls, texts embedded, for the
   shared segment and for private caches; with the segment every distinct text is
   embedded once in total (single flight across the processes: a text another worker
   is embedding is waited for), with private caches up to once per worker;
2. a cold Pool of 4 started after the first has filled the segment: each new worker's
   time from the Pool's start to its first hit (a fresh interpreter importing numpy
   and embcache, the attach, the first lookup), the attach alone, and its model calls
   on its first batch (0: warm at once).
The segment is unlinked at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections import defaultdict
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

# the clone last on the path: an installed embcache (PYTHONPATH, site-packages)
# comes first, so a run against a wheel never picks up the uncompiled source tree;
# without one, the clone's (built in place) is used, and benchmarks/ is found
sys.path.append(str(Path(__file__).resolve().parents[1]))

from embcache import CacheKey, SharedEmbeddingCache, SyncEmbeddingCache  # noqa: E402

MODEL = "warm-recipe-model"

# the worker's own state (each Pool process has its copy), set by init()
cache: Any = None
state: dict[str, Any] = {}


def vector_of(text: str, dim: int) -> np.ndarray:
    """The stand-in model's vector for `text`: a function of the text alone."""
    seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") ^ len(text)
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def init(
    name: str | None, dim: int, model_ms: float, capacity: int, start: Any, barrier: Any
) -> None:
    """Pool initializer: open the shared cache by name (or make a private one), then
    wait on `start` until every worker has (so the requests spread over all of them).
    With `barrier`, each request first waits until every worker holds one."""
    global cache
    began = time.monotonic()
    if name is None:
        cache = SyncEmbeddingCache(capacity, None, capacity * (dim * 4 + 256) / 2**20, dim=dim)
    else:
        cache = SharedEmbeddingCache.attach(name)
    state.update(
        dim=dim,
        model_ms=model_ms,
        calls=0,
        embedded=0,
        first_request_s=None,
        attach_began=began,
        attach_s=time.monotonic() - began,
        barrier=barrier,
    )


def model(keys: list[CacheKey]) -> np.ndarray:
    """The stand-in model: model_ms per text, counted."""
    state["calls"] += 1
    state["embedded"] += len(keys)
    time.sleep(state["model_ms"] / 1000 * len(keys))
    return np.stack([vector_of(k.content_hash, state["dim"]) for k in keys])


def serve(texts: list[str]) -> dict[str, Any]:
    """One request: the batch's vectors through the cache; what this worker did so far."""
    if state["barrier"] is not None:
        state["barrier"].wait(120)
    began = time.monotonic()
    keys = [CacheKey(t, MODEL) for t in texts]  # the text stands in for its hash
    if isinstance(cache, SharedEmbeddingCache):
        present = sum(k in cache for k in keys)
        matrix = cache.get_or_compute(keys, model)
    else:  # a private SyncEmbeddingCache: the same read-through, by hand
        matrix, found = cache.get_many(keys)
        present = int(found.sum())
        missing = [k for k, f in zip(keys, found) if not f]
        distinct = list(dict.fromkeys(missing))
        if distinct:
            cache.put_many(distinct, model(distinct))
            matrix, _ = cache.get_many(keys)
    if state["first_request_s"] is None:
        state["first_request_s"] = time.monotonic() - began
    for text, row in zip(texts, matrix):
        assert row.tobytes() == vector_of(text, state["dim"]).tobytes(), text
    return {
        "pid": os.getpid(),
        "keys": len(keys),
        "hits": present,
        "calls": state["calls"],
        "embedded": state["embedded"],
        "attach_s": state["attach_s"],
        "attach_began": state["attach_began"],
        "first_request_s": state["first_request_s"],
    }


def stream(requests: int, batch: int, distinct: int) -> list[list[str]]:
    """The request stream: batches of texts, Zipf over `distinct` texts (fixed seed)."""
    rng = np.random.default_rng(7)
    ids = np.minimum(rng.zipf(1.2, size=requests * batch), distinct) - 1
    return [[f"document {i}" for i in ids[r * batch : (r + 1) * batch]] for r in range(requests)]


def run_pool(
    name: str | None, args: argparse.Namespace, batches: list[list[str]], one_each: bool = False
) -> tuple[dict[int, dict[str, Any]], float]:
    """Serve `batches` with a spawn Pool; per worker pid its last report, and the
    monotonic time the Pool was started. `one_each`: as many batches as workers, each
    worker serving one (a barrier holds each until all have theirs)."""
    capacity = 4 * args.distinct
    context = get_context("spawn")
    start = context.Barrier(args.workers)
    barrier = context.Barrier(args.workers) if one_each else None
    started = time.monotonic()
    with context.Pool(
        args.workers,
        initializer=init,
        initargs=(name, args.dim, args.model_ms, capacity, start, barrier),
    ) as pool:
        reports = pool.map(serve, batches, chunksize=1)
    per: dict[int, dict[str, Any]] = {}
    served: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in reports:
        counts = served[r["pid"]]
        counts[0] += 1
        counts[1] += r["keys"]
        counts[2] += r["hits"]
        last = per.get(r["pid"])
        if last is None or r["calls"] >= last["calls"] and r["embedded"] >= last["embedded"]:
            per[r["pid"]] = dict(r)
    for pid, (n, keys, hits) in served.items():
        per[pid].update(batches=n, keys=keys, hits=hits)
    return per, started


def table(title: str, per: dict[int, dict[str, Any]]) -> None:
    print(title)
    print("  worker  batches   keys   hits  model calls  texts embedded")
    for i, (_, r) in enumerate(sorted(per.items())):
        print(
            f"  {i + 1:6d}  {r['batches']:7d}  {r['keys']:5d}  {r['hits']:5d}  "
            f"{r['calls']:11d}  {r['embedded']:14d}"
        )
    total = {k: sum(r[k] for r in per.values()) for k in ("keys", "hits", "calls", "embedded")}
    print(
        f"  {'total':>6}  {'':7}  {total['keys']:5d}  {total['hits']:5d}  "
        f"{total['calls']:11d}  {total['embedded']:14d}   hit rate "
        f"{total['hits'] / total['keys']:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--distinct", type=int, default=1000)
    parser.add_argument("--model-ms", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    batches = stream(args.requests, args.batch, args.distinct)
    distinct = len({t for b in batches for t in b})
    name = f"embcache-warm-{os.getpid()}-{secrets.token_hex(3)}"
    capacity = 4 * args.distinct
    mb = capacity * (args.dim * 4 + 256) / 2**20
    print(
        f"{len(batches)} requests of {args.batch} texts, {distinct} distinct; "
        f"Pool of {args.workers} (spawn); model {args.model_ms} ms per text; dim {args.dim}"
    )
    try:
        with SharedEmbeddingCache(name, capacity, None, mb, dim=args.dim) as shared:
            per, _ = run_pool(name, args, batches)
            table("\none SharedEmbeddingCache for the Pool:", per)
            embedded = sum(r["embedded"] for r in per.values())
            print(
                f"  every distinct text embedded once in total: {embedded == distinct} "
                f"({embedded} of {distinct}); segment holds {len(shared)}"
            )
            private, _ = run_pool(None, args, batches)
            table("\na private SyncEmbeddingCache in each worker:", private)
            print(
                f"  texts embedded: {sum(r['embedded'] for r in private.values())} "
                f"(the segment: {embedded})"
            )
            cold, started = run_pool(name, args, batches[: args.workers], one_each=True)
            print(
                f"\na cold Pool of {args.workers} (new spawn workers), one request each, "
                "on the filled segment:"
            )
            print("  worker  spawn+imports     attach  first request  hits/keys  model calls")
            for i, (_, r) in enumerate(sorted(cold.items())):
                print(
                    f"  {i + 1:6d}  {(r['attach_began'] - started) * 1e3:10.0f} ms"
                    f"  {r['attach_s'] * 1e3:6.2f} ms  {r['first_request_s'] * 1e3:10.2f} ms"
                    f"  {r['hits']:4d}/{r['keys']:<4d}  {r['calls']:11d}"
                )
            print(
                "  (time to first hit for a cold worker = attach + first request; spawn+imports "
                "is the fresh interpreter importing numpy and embcache, from the Pool's start)"
            )
    finally:
        SharedEmbeddingCache.unlink(name)


if __name__ == "__main__":
    main()
