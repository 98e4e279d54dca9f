"""CacheKey: construction, immutability, equality, hashing, pickling, from_text."""

from __future__ import annotations

import copy
import hashlib
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from embcache import CacheKey

texts = st.text(min_size=1, max_size=40, alphabet=st.characters(exclude_categories=("Cs",)))
chunks = st.none() | st.text(max_size=40, alphabet=st.characters(exclude_categories=("Cs",)))


def test_fields_are_kept() -> None:
    k = CacheKey("abc", "model-1", "chunk-7")
    assert (k.content_hash, k.model_version, k.chunk_id) == ("abc", "model-1", "chunk-7")
    k2 = CacheKey("abc", "model-1")
    assert k2.chunk_id is None


def test_keyword_arguments() -> None:
    k = CacheKey(content_hash="h", model_version="m", chunk_id="c")
    assert k == CacheKey("h", "m", "c")


@pytest.mark.parametrize("field", ["content_hash", "model_version", "chunk_id"])
def test_immutable_fields(field: str) -> None:
    k = CacheKey("h", "m", "c")
    with pytest.raises(AttributeError):
        setattr(k, field, "other")
    with pytest.raises(AttributeError):
        delattr(k, field)
    assert k == CacheKey("h", "m", "c")


def test_no_new_attributes() -> None:
    k = CacheKey("h", "m")
    with pytest.raises(AttributeError):
        k.extra = 1  # type: ignore[attr-defined]


def test_value_equality_and_hash() -> None:
    a = CacheKey("h", "m", "c")
    b = CacheKey("h", "m", "c")
    assert a is not b
    assert a == b
    assert not (a != b)
    assert hash(a) == hash(b)
    assert a.digest == b.digest
    assert len({a, b}) == 1
    assert {a: 1}[b] == 1


@pytest.mark.parametrize(
    "other",
    [
        CacheKey("h2", "m", "c"),
        CacheKey("h", "m2", "c"),
        CacheKey("h", "m", "c2"),
        CacheKey("h", "m"),
        CacheKey("h", "m", ""),
    ],
)
def test_any_field_difference_makes_another_key(other: CacheKey) -> None:
    k = CacheKey("h", "m", "c")
    assert k != other
    assert not (k == other)
    assert k.digest != other.digest


def test_none_and_empty_chunk_are_different_keys() -> None:
    a = CacheKey("h", "m", None)
    b = CacheKey("h", "m", "")
    assert a != b
    assert a.digest != b.digest
    assert len({a, b}) == 2


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("a:b", "c"), ("a", "b:c")),
        (("ab", "c"), ("a", "bc")),
        (("a", "b", "c"), ("a", "bc")),
        (("a", "b", "c"), ("a", "b\x00c")),
        (("a\x00", "b"), ("a", "\x00b")),
        (("a", "b", ""), ("a", "b")),
        (("a", "b", "c"), ("a", "b", "c\x00")),
    ],
)
def test_field_boundaries_never_collide(left: tuple, right: tuple) -> None:
    a, b = CacheKey(*left), CacheKey(*right)
    assert a != b
    assert a.digest != b.digest


def test_not_equal_to_other_types() -> None:
    k = CacheKey("h", "m", "c")
    assert k != ("h", "m", "c")
    assert k != "h"
    assert k != None  # noqa: E711
    assert k.__eq__(("h", "m", "c")) is NotImplemented


def test_digest_is_32_read_only_bytes() -> None:
    k = CacheKey("h", "m")
    assert isinstance(k.digest, bytes) and len(k.digest) == 32
    with pytest.raises(AttributeError):
        k.digest = b"x" * 32  # type: ignore[misc]


def test_hash_is_a_valid_python_hash() -> None:
    for i in range(200):
        h = hash(CacheKey(str(i), "m"))
        assert h != -1
        assert isinstance(h, int)


def test_pickle_round_trip() -> None:
    for k in [CacheKey("h", "m"), CacheKey("h", "m", ""), CacheKey("h€", "m", "c\U0001f600")]:
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            back = pickle.loads(pickle.dumps(k, protocol=proto))
            assert back == k
            assert back.digest == k.digest
            assert back.chunk_id == k.chunk_id
            assert type(back) is CacheKey


def test_copy() -> None:
    k = CacheKey("h", "m", "c")
    assert copy.copy(k) == k
    assert copy.deepcopy(k) == k


def test_repr() -> None:
    k = CacheKey("h", "m", None)
    assert repr(k) == "CacheKey(content_hash='h', model_version='m', chunk_id=None)"


def test_from_text_uses_sha256_of_utf8() -> None:
    text = "héllo wörld ✓"
    k = CacheKey.from_text(text, "nomic-embed-text-v1.5", "chunk_1")
    assert k.content_hash == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert k.model_version == "nomic-embed-text-v1.5"
    assert k.chunk_id == "chunk_1"
    assert k == CacheKey(k.content_hash, "nomic-embed-text-v1.5", "chunk_1")
    assert CacheKey.from_text(text, "m").chunk_id is None


def test_from_text_empty_text_is_allowed() -> None:
    # the text may be empty: its hash is not
    k = CacheKey.from_text("", "m")
    assert k.content_hash == hashlib.sha256(b"").hexdigest()


def test_from_text_distinguishes_texts() -> None:
    assert CacheKey.from_text("a", "m") != CacheKey.from_text("b", "m")
    assert CacheKey.from_text("a", "m1") != CacheKey.from_text("a", "m2")


def test_unicode_fields() -> None:
    a = CacheKey("日本語", "模型", "😀")
    b = CacheKey("日本語", "模型", "😀")
    assert a == b and hash(a) == hash(b)
    assert a != CacheKey("日本語", "模型", "😁")


@given(texts, texts, chunks, texts, texts, chunks)
def test_equality_matches_field_equality(h1, m1, c1, h2, m2, c2) -> None:  # type: ignore[no-untyped-def]
    a, b = CacheKey(h1, m1, c1), CacheKey(h2, m2, c2)
    same = (h1, m1, c1) == (h2, m2, c2)
    assert (a == b) is same
    assert (a.digest == b.digest) is same
    if same:
        assert hash(a) == hash(b)
