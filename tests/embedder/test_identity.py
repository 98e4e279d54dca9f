"""embcache.identity.ModelIdentity: everything that changes the vectors is in the
model version; reading it off a sentence-transformers model (a duck-typed fake
here; the real model in test_sentence_transformers.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from adapter_models import FakeSentenceTransformer
from conftest import run
from hypothesis import given
from hypothesis import strategies as st

from embcache import (
    CachedEmbedder,
    DimensionMismatchError,
    EmbcacheError,
    EmbeddingCache,
    SyncEmbeddingCache,
)
from embcache.identity import ModelIdentity

BASE = ModelIdentity("all-MiniLM-L6-v2", dim=384)


def test_model_version_is_the_name_and_a_stable_digest() -> None:
    version = BASE.model_version
    assert re.fullmatch(r"all-MiniLM-L6-v2:[0-9a-f]{20}", version)
    assert ModelIdentity("all-MiniLM-L6-v2", dim=384).model_version == version
    assert str(BASE) == version
    # stable across processes and releases: the documented encoding, and a pinned value
    fields = {
        "name": "m", "dim": 3, "revision": None, "dtype": "float32", "precision": "float32",
        "normalized": False, "prompt": "", "max_tokens": None, "extra": [],
    }  # fmt: skip
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:20]
    assert ModelIdentity("m", dim=3).model_version == "m:" + digest == "m:727d6915ef932eae365b"


CHANGES: list[dict[str, Any]] = [
    {"name": "all-MiniLM-L12-v2"},
    {"dim": 256},
    {"revision": "c9745ed1"},
    {"dtype": "float16"},
    {"precision": "int8"},
    {"normalized": True},
    {"prompt": "query: "},
    {"max_tokens": 128},
    {"extra": {"pooling": "cls"}},
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: next(iter(c)))
def test_every_field_changes_the_model_version(change: dict[str, Any]) -> None:
    other = dataclasses.replace(BASE, **change)
    assert other.model_version != BASE.model_version


def test_all_changes_are_pairwise_distinct() -> None:
    versions = {dataclasses.replace(BASE, **c).model_version for c in CHANGES}
    assert len(versions) == len(CHANGES)


@given(
    st.text(min_size=1, max_size=8),
    st.text(min_size=1, max_size=8),
    st.text(max_size=8),
    st.text(max_size=8),
)
def test_field_boundaries_never_meet(a: str, b: str, p: str, q: str) -> None:
    """Canonical JSON: moving text from one field to another changes the digest."""
    x = ModelIdentity(a, dim=1, prompt=p, extra={"k": q})
    y = ModelIdentity(a, dim=1, prompt=p + q, extra={"k": ""})
    assert (x.model_version == y.model_version) == (q == "")
    assert (
        ModelIdentity(a, dim=1, revision=b).model_version != ModelIdentity(a, dim=1).model_version
    )


def test_extra_is_sorted_and_hashable() -> None:
    one = ModelIdentity("m", dim=2, extra={"b": "2", "a": "1"})
    two = ModelIdentity("m", dim=2, extra=(("a", "1"), ("b", "2")))
    assert one == two and hash(one) == hash(two) and one.extra == (("a", "1"), ("b", "2"))
    assert one.model_version == two.model_version


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": ""}, ValueError, "name must be a non-empty str"),
        ({"name": None}, TypeError, "name must be a str"),
        ({"dim": 0}, ValueError, "dim must be >= 1"),
        ({"dim": -3}, ValueError, "dim must be >= 1"),
        ({"dim": 2.0}, TypeError, "dim must be an int"),
        ({"dim": True}, TypeError, "dim must be an int"),
        ({"dim": float("nan")}, TypeError, "dim must be an int"),
        ({"revision": ""}, ValueError, "revision"),
        ({"revision": 5}, TypeError, "revision"),
        ({"dtype": ""}, ValueError, "dtype"),
        ({"precision": b"int8"}, TypeError, "precision"),
        ({"normalized": 1}, TypeError, "normalized must be a bool"),
        ({"prompt": None}, TypeError, "prompt must be a str"),
        ({"max_tokens": 0}, ValueError, "max_tokens must be >= 1"),
        ({"max_tokens": "512"}, TypeError, "max_tokens must be an int"),
        ({"extra": "pooling=cls"}, TypeError, "extra must be a mapping"),
        ({"extra": {"k": 1}}, TypeError, "extra"),
        ({"extra": {1: "v"}}, TypeError, "extra key"),
        ({"extra": [("k", "a"), ("k", "b")]}, ValueError, "twice"),
        ({"extra": [("k",)]}, TypeError, "extra must be a mapping"),
    ],
)
def test_bad_fields(kwargs: dict[str, Any], error: type, match: str) -> None:
    args: dict[str, Any] = {"name": "m", "dim": 4}
    args.update(kwargs)
    with pytest.raises(error, match=match) as info:
        ModelIdentity(**args)
    assert isinstance(info.value, EmbcacheError)


def test_numpy_integers_are_dims() -> None:
    assert ModelIdentity("m", dim=np.int64(8)).dim == 8


# --- from a sentence-transformers model (duck-typed) ------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "my-model"
    (d / "1_Pooling").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"weights" * 100)
    (d / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (d / "README.md").write_text("not part of the identity")
    return d


def test_read_off_the_model(model_dir: Path) -> None:
    model = FakeSentenceTransformer(str(model_dir))
    ident = ModelIdentity.from_sentence_transformer(model)
    assert ident.name == "my-model" and ident.dim == 6 and ident.normalized
    assert ident.dtype == "float32" and ident.prompt == "" and ident.max_tokens == 256
    assert ident.revision is not None and ident.revision.startswith("sha256-")
    assert dict(ident.extra) == {"modules": "Transformer,Pooling,Normalize"}
    # the same model gives the same identity; every setting that changes vectors another
    assert ModelIdentity.from_sentence_transformer(model) == ident
    variants = [
        ModelIdentity.from_sentence_transformer(model, prompt_name="query"),
        ModelIdentity.from_sentence_transformer(model, prompt="Represent this: "),
        ModelIdentity.from_sentence_transformer(model, truncate_dim=4),
        ModelIdentity.from_sentence_transformer(model, precision="int8"),
        ModelIdentity.from_sentence_transformer(model, name="other"),
        ModelIdentity.from_sentence_transformer(model, revision="abc123"),
        ModelIdentity.from_sentence_transformer(
            FakeSentenceTransformer(str(model_dir), normalize=False)
        ),
    ]
    versions = {v.model_version for v in variants} | {ident.model_version}
    assert len(versions) == len(variants) + 1
    assert variants[0].prompt == "query: " and variants[2].dim == 4
    # normalize_embeddings=True on an already normalising model: the same vectors
    same = ModelIdentity.from_sentence_transformer(model, normalize_embeddings=True)
    assert same == ident


def test_weights_change_the_revision(model_dir: Path) -> None:
    model = FakeSentenceTransformer(str(model_dir))
    before = ModelIdentity.from_sentence_transformer(model)
    (model_dir / "README.md").write_text("edited docs do not count")
    assert ModelIdentity.from_sentence_transformer(model) == before
    (model_dir / "model.safetensors").write_bytes(b"fine-tuned" * 100)
    after = ModelIdentity.from_sentence_transformer(model)
    assert after.revision != before.revision and after.model_version != before.model_version


def test_hub_snapshot_path_gives_the_commit() -> None:
    path = "/cache/models--org--name/snapshots/0123456789abcdef0123456789abcdef01234567"
    model = FakeSentenceTransformer(path)
    model.model_card_data.base_model = "org/name"  # type: ignore[attr-defined]
    ident = ModelIdentity.from_sentence_transformer(model)
    assert ident.name == "org/name"
    assert ident.revision == "0123456789abcdef0123456789abcdef01234567"


def test_default_prompt_and_model_truncation(model_dir: Path) -> None:
    model = FakeSentenceTransformer(str(model_dir))
    model.default_prompt_name = "query"
    model.truncate_dim = 3
    ident = ModelIdentity.from_sentence_transformer(model)
    assert ident.prompt == "query: " and ident.dim == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prompt_name": "missing"}, ValueError, "not one of the model's prompts"),
        ({"prompt_name": ""}, ValueError, "prompt_name"),
        ({"prompt_name": 3}, TypeError, "prompt_name"),
        ({"prompt": 3}, TypeError, "prompt"),
        ({"precision": "float64"}, ValueError, "precision must be one of"),
        ({"precision": None}, TypeError, "precision"),
        ({"truncate_dim": 0}, ValueError, "truncate_dim must be >= 1"),
        ({"truncate_dim": 2.5}, TypeError, "truncate_dim must be an int"),
        ({"normalize_embeddings": "yes"}, TypeError, "normalize_embeddings must be a bool"),
        ({"name": ""}, ValueError, "name"),
        ({"revision": 1}, TypeError, "revision"),
    ],
)
def test_bad_arguments(model_dir: Path, kwargs: dict[str, Any], error: type, match: str) -> None:
    model = FakeSentenceTransformer(str(model_dir))
    with pytest.raises(error, match=match) as info:
        ModelIdentity.from_sentence_transformer(model, **kwargs)
    assert isinstance(info.value, EmbcacheError)


@pytest.mark.parametrize(
    "model", [object(), None, "all-MiniLM-L6-v2", type("E", (), {"encode": 1})()]
)
def test_not_a_sentence_transformer(model: Any) -> None:
    with pytest.raises(TypeError, match="model must be a SentenceTransformer"):
        ModelIdentity.from_sentence_transformer(model)


# --- CachedEmbedder uses it ------------------------------------------------------------------


def test_cached_embedder_reads_the_identity_of_an_encode(model_dir: Path) -> None:
    model = FakeSentenceTransformer(str(model_dir))
    embedder = CachedEmbedder(model.encode)
    assert embedder.identity == ModelIdentity.from_sentence_transformer(model)
    assert embedder.model_version == embedder.identity.model_version  # type: ignore[union-attr]
    given = CachedEmbedder(model.encode, BASE)
    assert given.identity is BASE and given.model_version == BASE.model_version
    assert CachedEmbedder(model.encode, "plain").identity is None
    with pytest.raises(TypeError, match="model_version is required"):
        CachedEmbedder(lambda texts: np.ones((len(texts), 2)))


def test_two_configurations_never_share_an_entry(model_dir: Path) -> None:
    """Same texts, same cache, same model: another prompt gives other vectors,
    and never the first configuration's."""
    from embcache.sentence_transformers import cached_embedder

    cache = EmbeddingCache()
    model = FakeSentenceTransformer(str(model_dir))
    plain = cached_embedder(model, cache=cache)
    prompted = cached_embedder(model, cache=cache, prompt="abc")
    assert plain.model_version != prompted.model_version
    a = plain.embed_sync(["t", "u"])
    b = prompted.embed_sync(["t", "u"])
    assert (a == 0).all() and (b == 3).all()  # the fake's vector is len(prompt)
    assert len(cache) == 4


# --- the identity's dim is the dimension of the vectors cached under it ----------------------

SAYS_384 = ModelIdentity("m", dim=384)


def _three_dim(texts: list[str]) -> np.ndarray:
    return np.ones((len(texts), 3), dtype=np.float32)


def test_check_dim() -> None:
    SAYS_384.check_dim(384, "the vectors")
    with pytest.raises(DimensionMismatchError) as info:
        SAYS_384.check_dim(3, "the vectors")
    assert str(info.value) == (
        "the vectors has dim 3, but the model identity 'm' says dim 384; give ModelIdentity "
        "the dimension the model returns"
    )
    assert isinstance(info.value, ValueError) and isinstance(info.value, EmbcacheError)
    # sentence-transformers' binary precisions pack 8 values a byte
    for precision in ("binary", "ubinary"):
        packed = dataclasses.replace(SAYS_384, precision=precision)
        packed.check_dim(384, "x")
        packed.check_dim(48, "x")
        with pytest.raises(DimensionMismatchError, match=r"says dim 384 \(or 48 bytes of packed"):
            packed.check_dim(47, "x")
    with pytest.raises(DimensionMismatchError):
        dataclasses.replace(SAYS_384, precision="int8").check_dim(48, "x")


@pytest.mark.parametrize("call", ["embed_sync", "embed_one_sync", "embed", "embed_one"])
@pytest.mark.parametrize("batch_size", [1, 256])
def test_cached_embedder_refuses_vectors_of_another_dim(call: str, batch_size: int) -> None:
    cache = SyncEmbeddingCache()
    embedder = CachedEmbedder(_three_dim, SAYS_384, cache=cache, batch_size=batch_size)
    arg: Any = "a" if "one" in call else ["a", "b", "c"]

    def invoke() -> Any:
        result = getattr(embedder, call)(arg)
        return run(result) if call in ("embed", "embed_one") else result

    for _ in range(2):  # the refusal settles the flight: a retry is refused the same way
        with pytest.raises(DimensionMismatchError, match=r"has dim 3, but the model identity 'm'"):
            invoke()
    assert len(cache) == 0  # nothing of a refused answer is cached
    right = CachedEmbedder(_three_dim, dataclasses.replace(SAYS_384, dim=3), cache=cache)
    assert right.embed_sync(["a", "b"]).shape == (2, 3) and len(cache) == 2


def test_cached_embedder_refuses_an_identity_the_cache_cannot_hold() -> None:
    cache = SyncEmbeddingCache(dim=3)
    with pytest.raises(DimensionMismatchError, match="the cache has dim 3, but the model identity"):
        CachedEmbedder(_three_dim, SAYS_384, cache=cache)
    with pytest.raises(DimensionMismatchError, match="the cache has dim 3"):
        CachedEmbedder(_three_dim, SAYS_384, cache=EmbeddingCache(dim=3))
    CachedEmbedder(_three_dim, dataclasses.replace(SAYS_384, dim=3), cache=cache)
    CachedEmbedder(_three_dim, "a plain str version: no dim to check", cache=cache)
