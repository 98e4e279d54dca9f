"""CachedEmbedder's own cost, the model a zero-cost fake (it answers a
preallocated matrix): one text per call (a query: ``embed_one_sync``, and
``embed_sync([text])``) and batches of 64 texts (``embed_sync``), each a hit
or a miss. A miss pays the text's key, the lookup, the single-flight claim,
the model call, validation, the store and the settle.

Timing (see _util.py): setup runs before every timed call, untimed, and makes
the texts (misses: never-seen texts, into a new cache); the reported seconds
are per text (per query, or per text of a batch). Texts are the real
workload's length class: one-line queries of ~60 characters, chunks of ~400.
"""

from __future__ import annotations

import itertools
from time import perf_counter

import numpy as np

from embcache import CachedEmbedder, SyncEmbeddingCache

from ._util import MODEL, OPS, PerOp, memo

DIM = 384
BATCH = 64
BATCHES = 16
_ANSWER = np.full((BATCH, DIM), 0.05, dtype=np.float32)
_fresh = itertools.count()


def _zero_model(texts: list[str]) -> np.ndarray:
    return _ANSWER[: len(texts)]


def _embedder() -> CachedEmbedder:
    cache = SyncEmbeddingCache(4 * OPS + 4 * BATCH * BATCHES, None, 64, dim=DIM)
    return CachedEmbedder(_zero_model, MODEL, cache=cache, batch_size=BATCH)


def _queries(tag: str) -> list[str]:
    return [f"What does frozenset do, question {tag} number {i}?" for i in range(OPS)]


def _chunks(tag: str) -> list[list[str]]:
    text = "Return a new frozenset object, optionally with elements taken from iterable. " * 5
    return [
        [f"{text} ({tag}, batch {b}, chunk {i})" for i in range(BATCH)] for b in range(BATCHES)
    ]


def _hit_embedder(what: str) -> tuple[CachedEmbedder, list]:
    def build() -> tuple[CachedEmbedder, list]:
        embedder = _embedder()
        texts = _queries("hit") if what == "query" else _chunks("hit")
        for text in texts:
            embedder.embed_sync([text] if what == "query" else text)
        return embedder, texts

    return memo(("bench_embedder", what), build)  # type: ignore[no-any-return]


class EmbedderQuery(PerOp):
    """One text per call; seconds per query."""

    params = [["hit", "miss"], ["embed_one_sync", "embed_sync"]]
    param_names = ["lookup", "call"]

    def setup(self, lookup: str, call: str) -> None:
        if lookup == "hit":
            self.embedder, self.texts = _hit_embedder("query")
        else:
            self.embedder, self.texts = _embedder(), _queries(f"miss {next(_fresh)}")

    def time_query(self, lookup: str, call: str) -> None:
        if call == "embed_one_sync":
            one = self.embedder.embed_one_sync
            for text in self.texts:
                one(text)
        else:
            embed = self.embedder.embed_sync
            for text in self.texts:
                embed([text])


def _per_text_timer() -> float:
    return perf_counter() / (BATCH * BATCHES)


class EmbedderBatch(PerOp):
    """Batches of 64 texts; seconds per text."""

    params = [["hit", "miss"]]
    param_names = ["lookup"]
    timer = staticmethod(_per_text_timer)

    def setup(self, lookup: str) -> None:
        if lookup == "hit":
            self.embedder, self.batches = _hit_embedder("batch")
        else:
            self.embedder, self.batches = _embedder(), _chunks(f"miss {next(_fresh)}")

    def time_batch(self, lookup: str) -> None:
        embed = self.embedder.embed_sync
        for batch in self.batches:
            embed(batch)
