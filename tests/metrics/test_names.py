"""name= on every cache kind, RedisTier, CachedEmbedder and the adapters: checked,
generated when not given, reported by ``.name``, and never part of a key."""

from __future__ import annotations

import asyncio
import gc
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import key, vec

from embcache import (
    ArgumentTypeError,
    ArgumentValueError,
    CachedEmbedder,
    EmbeddingCache,
    SyncEmbeddingCache,
)
from embcache.core.names import live

GENERATED = re.compile(r"embcache-[1-9][0-9]*")
GOOD = ["a", "A.b_c:d-9", "x" * 64, "0", "model:all-MiniLM-L6-v2"]
BAD_VALUES = ["", "x" * 65, "has space", "tab\t", "naïve", "new\nline", "a/b", "a,b", 'q"uote']
BAD_TYPES: list[Any] = [1, 1.5, b"bytes", ["a"], object()]


def model(texts: list[str]) -> np.ndarray:
    return np.ones((len(texts), 4), dtype=np.float32)


def make_sync(name: Any) -> Any:
    return SyncEmbeddingCache(10, name=name)


def make_async(name: Any) -> Any:
    return EmbeddingCache(10, name=name)


def make_embedder(name: Any) -> Any:
    return CachedEmbedder(model, "m", cache=SyncEmbeddingCache(10), name=name)


def make_tier(name: Any) -> Any:
    pytest.importorskip("redis")
    from redis.asyncio import Redis

    from embcache.redis import RedisTier

    async def on_a_loop() -> Any:  # Python 3.9's redis-py client takes the running loop
        return RedisTier(Redis(host="127.0.0.1", port=9), name=name)

    return asyncio.run(on_a_loop())


def make_langchain(name: Any) -> Any:
    pytest.importorskip("langchain_core")
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from embcache.langchain import CachedEmbeddings

    return CachedEmbeddings(DeterministicFakeEmbedding(size=4), "fake", name=name)


def make_llamaindex(name: Any) -> Any:
    pytest.importorskip("llama_index.core")
    from llama_index.core.embeddings import MockEmbedding

    from embcache.llamaindex import CachedEmbedding

    return CachedEmbedding(MockEmbedding(embed_dim=4), "fake", name=name)


def make_sentence_transformer(name: Any) -> Any:
    from adapter_models import FakeSentenceTransformer

    from embcache.sentence_transformers import cached_embedder

    return cached_embedder(FakeSentenceTransformer("fake-model"), embedder_name=name)


MAKERS = {
    "SyncEmbeddingCache": make_sync,
    "EmbeddingCache": make_async,
    "CachedEmbedder": make_embedder,
    "RedisTier": make_tier,
    "langchain": make_langchain,
    "llamaindex": make_llamaindex,
    "sentence_transformers": make_sentence_transformer,
}


@pytest.mark.parametrize("kind", MAKERS)
def test_a_given_name_is_kept_and_a_missing_one_generated(kind: str) -> None:
    make = MAKERS[kind]
    for name in GOOD:
        assert make(name).name == name
    first, second = make(None).name, make(None).name
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second)
    assert first != second
    assert int(second.split("-")[1]) > int(first.split("-")[1])  # made later, counted later


@pytest.mark.parametrize("kind", MAKERS)
def test_a_bad_name_is_refused(kind: str) -> None:
    make = MAKERS[kind]
    for bad in BAD_VALUES:
        with pytest.raises(ArgumentValueError, match=r"1 to 64 characters") as err:
            make(bad)
        assert isinstance(err.value, ValueError)
    for bad_type in BAD_TYPES:
        with pytest.raises(ArgumentTypeError, match="must be a str or None") as terr:
            make(bad_type)
        assert isinstance(terr.value, TypeError)


def test_a_refused_name_registers_nothing() -> None:
    gc.collect()
    before = {kind: len(live(kind)) for kind in ("cache", "embedder")}
    kept = [SyncEmbeddingCache(10)]  # the count moves for a cache that is made
    for bad in ["bad name", 5]:
        with pytest.raises((ArgumentValueError, ArgumentTypeError)):
            SyncEmbeddingCache(10, name=bad)
        with pytest.raises((ArgumentValueError, ArgumentTypeError)):
            CachedEmbedder(model, "m", cache=kept[0], name=bad)
    gc.collect()
    assert len(live("cache")) == before["cache"] + 1
    assert len(live("embedder")) == before["embedder"]


def test_the_facade_names_its_core_and_a_name_is_not_part_of_a_key(tmp_path: Path) -> None:
    cache = EmbeddingCache(10, name="front")
    assert cache.sync.name == "front"
    assert EmbeddingCache.wrap(cache.sync).name == "front"
    cache.sync.put(key(1), vec(1))
    path = tmp_path / "s.snap"
    cache.sync.save(path)
    # the same key finds the same vector in a cache of another name
    other = SyncEmbeddingCache.load(path, name="back")
    assert other.name == "back"
    assert np.array_equal(other.get(key(1)), vec(1))
    assert SyncEmbeddingCache.load(path).name != "back"
    with pytest.raises(ArgumentValueError):
        SyncEmbeddingCache.load(path, name="no good")
    with pytest.raises(ArgumentValueError):  # checked before the file is read
        SyncEmbeddingCache.load(tmp_path / "missing.snap", name="no good")

    async def facade() -> None:
        loaded = await EmbeddingCache.load(path, name="loaded")
        assert loaded.name == "loaded" and len(loaded) == 1
        async with EmbeddingCache.open(path, name="opened") as opened:
            assert opened.name == "opened" and len(opened) == 1
        async with EmbeddingCache.open(tmp_path / "new.snap", name="fresh") as fresh:
            assert fresh.name == "fresh" and len(fresh) == 0

    asyncio.run(facade())


def test_embedders_named_alike_share_keys_and_a_tier_name_is_not_in_redis_keys() -> None:
    cache = SyncEmbeddingCache(10)
    one = CachedEmbedder(model, "m", cache=cache, name="one")
    two = CachedEmbedder(model, "m", cache=cache, name="two")
    assert one.key("text") == two.key("text")
    one.embed_sync(["text"])
    two.embed_sync(["text"])
    assert (one.stats.model_calls, two.stats.model_calls) == (1, 0)
    pytest.importorskip("redis")
    tiers = [make_tier("tier-a"), make_tier("tier-b")]
    assert tiers[0].redis_key(key(1)) == tiers[1].redis_key(key(1))


def test_an_adapters_embedders_share_its_name() -> None:
    adapter = make_langchain("lc")
    assert adapter.name == "lc"
    assert adapter.document_embedder.name == adapter.query_embedder.name == "lc"
    unnamed = make_langchain(None)
    assert unnamed.document_embedder.name == unnamed.query_embedder.name == unnamed.name
    assert GENERATED.fullmatch(unnamed.name)


def test_cached_embedders_name_is_still_the_models() -> None:
    from adapter_models import FakeSentenceTransformer

    from embcache.sentence_transformers import cached_embedder

    model = FakeSentenceTransformer("fake-model")
    embedder = cached_embedder(model, name="n", embedder_name="metrics-n")
    assert embedder.name == "metrics-n"
    assert embedder.identity is not None and embedder.identity.name == "n"
