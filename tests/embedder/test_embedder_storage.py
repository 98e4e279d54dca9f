"""CachedEmbedder's ``storage=``: the rows of the default cache it makes; a cache
passed in keeps its own; the storage is part of no key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run

from embcache import CacheKey, EmbcacheError, EmbeddingCache, SyncEmbeddingCache
from embcache.embedder.caches import STORAGES
from embcache.embedder.embedder import CachedEmbedder
from embcache.errors import ArgumentTypeError, ArgumentValueError

DIM = 16
COMPACT = ["float16", "bfloat16", "int8"]


class Model:
    """A deterministic model whose vectors are not exact in any compact storage
    (thirds and sevenths of the text's bytes), counting the texts it embeds."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return np.stack([vector(t) for t in texts])


def vector(text: str) -> np.ndarray:
    codes = np.frombuffer((text * DIM).encode()[:DIM], dtype=np.uint8).astype(np.float64)
    return ((codes - 100.0) / 3.0 + np.arange(DIM) / 7.0).astype(np.float32)


def stored(row: np.ndarray, storage: str) -> np.ndarray:
    """A numpy reference of `row` after the round trip through `storage` (float16
    exactly; bfloat16 and int8 as bounds are checked below)."""
    if storage == "float16":
        return row.astype(np.float16).astype(np.float32)
    return row


TEXTS = ["alpha", "beta", "gamma", "alpha"]


def test_default_storage_is_float32() -> None:
    embedder = CachedEmbedder(Model(), "m")
    assert embedder.storage == "float32"
    assert isinstance(embedder.cache, EmbeddingCache) and embedder.cache.storage == "float32"


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("entry", ["embed", "embed_sync"])
def test_storage_chooses_the_default_caches_rows(storage: str, entry: str) -> None:
    model = Model()
    embedder = CachedEmbedder(model, "m", storage=storage)
    cache = embedder.cache
    assert isinstance(cache, EmbeddingCache)
    assert embedder.storage == cache.storage == cache.sync.storage == storage
    assert cache.sync.get_cache_info().storage == storage

    def call(texts: list[str]) -> np.ndarray:
        if entry == "embed":
            return run(embedder.embed(texts))  # type: ignore[no-any-return]
        return embedder.embed_sync(texts)

    misses = call(TEXTS)
    assert model.texts == ["alpha", "beta", "gamma"]
    hits = call(TEXTS)  # every text from the cache: the stored rows, decoded
    assert model.texts == ["alpha", "beta", "gamma"]
    np.testing.assert_array_equal(misses, hits)  # a miss gives what the cache holds
    assert hits.dtype == np.float32 and hits.shape == (4, DIM)
    want = np.stack([vector(t) for t in TEXTS])
    if storage == "float32":
        np.testing.assert_array_equal(hits, want)
    elif storage == "float16":
        np.testing.assert_array_equal(hits, stored(want, storage))
        assert not np.array_equal(hits, want)  # the rows really are float16
    elif storage == "bfloat16":  # 8 significant bits: within 2^-8 relative
        assert np.all(np.abs(hits - want) <= np.abs(want) * 2.0**-8)
        assert not np.array_equal(hits, want)
    else:  # int8: within half a step of each row's scale (absmax / 127)
        scale = np.abs(want).max(axis=1, keepdims=True) / 127
        assert np.all(np.abs(hits - want) <= scale / 2 * (1 + 1e-6))
        assert not np.array_equal(hits, want)
    one = embedder.embed_one_sync("beta")  # a one-text hit
    np.testing.assert_array_equal(one, hits[1])


@pytest.mark.parametrize("kind", [EmbeddingCache, SyncEmbeddingCache])
@pytest.mark.parametrize("storage", COMPACT)
def test_a_cache_passed_in_keeps_its_own_storage(kind: Any, storage: str) -> None:
    cache = kind(storage=storage)
    embedder = CachedEmbedder(Model(), "m", cache=cache)
    assert embedder.cache is cache and embedder.storage == storage
    # naming the same storage again is allowed; it changes nothing
    same = CachedEmbedder(Model(), "m", cache=cache, storage=storage)
    assert same.cache is cache and same.storage == storage


@pytest.mark.parametrize(
    "storage, error, words",
    [
        (16, ArgumentTypeError, "storage must be a str"),
        (b"float16", ArgumentTypeError, "storage must be a str"),
        (np.str_("int8").encode(), ArgumentTypeError, "storage must be a str"),
        ("fp16", ArgumentValueError, "'float32', 'float16', 'bfloat16', 'int8'"),
        ("Float16", ArgumentValueError, "got 'Float16'"),
        ("", ArgumentValueError, "storage must be one of"),
    ],
)
def test_bad_storage_is_rejected(storage: Any, error: type, words: str) -> None:
    model = Model()
    with pytest.raises(error, match=words) as caught:
        CachedEmbedder(model, "m", storage=storage)
    assert isinstance(caught.value, EmbcacheError)
    assert isinstance(caught.value, TypeError if error is ArgumentTypeError else ValueError)
    cache = SyncEmbeddingCache(storage="float16")
    cache.put(CacheKey.from_text("x", "m"), np.ones(DIM, np.float32))
    with pytest.raises(error, match=words):
        CachedEmbedder(model, "m", cache=cache, storage=storage)
    assert model.texts == [] and len(cache) == 1 and cache.storage == "float16"


def test_a_storage_other_than_the_given_caches_is_rejected_and_changes_nothing() -> None:
    cache = EmbeddingCache(storage="int8")
    cache.sync.put(CacheKey.from_text("x", "m"), np.ones(DIM, np.float32))
    before = cache.sync.get_cache_info()
    with pytest.raises(ArgumentValueError, match="the given cache stores 'int8'"):
        CachedEmbedder(Model(), "m", cache=cache, storage="float16")
    with pytest.raises(ArgumentValueError, match="stores 'float32'"):
        CachedEmbedder(Model(), "m", cache=SyncEmbeddingCache(), storage="int8")
    assert cache.sync.get_cache_info() == before and cache.storage == "int8"


def test_the_storage_is_part_of_no_key() -> None:
    embedders = {s: CachedEmbedder(Model(), "m", storage=s) for s in STORAGES}
    key = CacheKey.from_text("alpha", "m")
    assert {e.key("alpha") for e in embedders.values()} == {key}
    for embedder in embedders.values():
        embedder.embed_sync(["alpha"])
    # caches of different storages hold the same key, one entry each
    for storage, embedder in embedders.items():
        sync = embedder.cache.sync  # type: ignore[union-attr]
        assert key in sync and len(sync) == 1, storage


@pytest.mark.parametrize("saved, loaded", [("float16", "int8"), ("int8", "float32")])
def test_an_entry_stored_under_one_storage_is_a_hit_under_another(
    tmp_path: Path, saved: str, loaded: str
) -> None:
    """The same text under the same model is one entry whatever the storage: a
    snapshot of one storage loaded as another answers the same texts."""
    model = Model()
    first = CachedEmbedder(model, "m", storage=saved)
    original = first.embed_sync(TEXTS)
    first.cache.sync.save(tmp_path / "s.embc")  # type: ignore[union-attr]
    cache = SyncEmbeddingCache.load(tmp_path / "s.embc", storage=loaded)
    assert cache.storage == loaded
    second = CachedEmbedder(model, "m", cache=cache)
    again = second.embed_sync(TEXTS)
    assert model.texts == ["alpha", "beta", "gamma"]  # no text embedded twice
    assert second.stats.texts_from_cache == len(TEXTS)
    scale = np.abs(original).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(again - original) <= scale)  # within the coarser rounding
