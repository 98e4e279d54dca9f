"""SipHash-2-4 against the specification's test vectors, and the key fingerprint
(the streaming use of the same hash) against a one-shot hash of the canonical
encoding."""

from __future__ import annotations

import struct

import pytest
from siphash_vectors import VECTORS_64, VECTORS_128

from embcache import CacheKey
from embcache._core import _siphash24, hash_key

SPEC_KEY = bytes(range(16))


def test_vector_tables_are_complete() -> None:
    assert len(VECTORS_64) == 64 and len(VECTORS_128) == 64
    assert all(len(bytes.fromhex(v)) == 8 for v in VECTORS_64)
    assert all(len(bytes.fromhex(v)) == 16 for v in VECTORS_128)


@pytest.mark.parametrize("length", range(64))
def test_siphash64_vectors(length: int) -> None:
    out = _siphash24(SPEC_KEY, bytes(range(length)))
    assert out.hex() == VECTORS_64[length]


@pytest.mark.parametrize("length", range(64))
def test_siphash128_vectors(length: int) -> None:
    out = _siphash24(SPEC_KEY, bytes(range(length)), True)
    assert out.hex() == VECTORS_128[length]


def test_out128_keyword_and_default() -> None:
    assert _siphash24(SPEC_KEY, b"") == bytes.fromhex(VECTORS_64[0])
    assert _siphash24(SPEC_KEY, b"", out128=False) == bytes.fromhex(VECTORS_64[0])
    assert _siphash24(SPEC_KEY, b"", out128=True) == bytes.fromhex(VECTORS_128[0])


@pytest.mark.parametrize("bad", [b"", bytes(15), bytes(17), bytes(32)])
def test_key_must_be_16_bytes(bad: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        _siphash24(bad, b"data")


def test_arguments_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="'key' has incorrect type.*expected bytes, got str"):
        _siphash24("0123456789abcdef", b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'data' has incorrect type.*expected bytes, got str"):
        _siphash24(SPEC_KEY, "text")  # type: ignore[arg-type]


def test_hash_key_is_16_random_bytes_fixed_for_the_process() -> None:
    k = hash_key()
    assert isinstance(k, bytes) and len(k) == 16
    assert hash_key() == k
    assert k != bytes(16)


# --- fingerprints: the streaming hash over the canonical encoding ----------------


def canonical(content_hash: str, model_version: str, chunk_id: str | None) -> bytes:
    """The key encoding the core documents: each field length-prefixed (u64 LE)
    in UTF-8, and a presence byte before chunk_id."""
    out = bytearray()
    for field in (content_hash, model_version):
        data = field.encode("utf-8")
        out += struct.pack("<Q", len(data)) + data
    if chunk_id is None:
        out += b"\x00"
    else:
        data = chunk_id.encode("utf-8")
        out += b"\x01" + struct.pack("<Q", len(data)) + data
    return bytes(out)


def expected_fingerprint(k: CacheKey) -> tuple[int, int]:
    digest = _siphash24(hash_key(), canonical(k.content_hash, k.model_version, k.chunk_id), True)
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


# field lengths 1..20 cross 8-byte word boundaries at every offset
LENGTHS = list(range(1, 21))


@pytest.mark.parametrize("n", LENGTHS)
def test_fingerprint_equals_one_shot_hash_of_encoding(n: int) -> None:
    # the streaming state is fed in pieces (prefix, body, prefix, body, tag, ...)
    # whose boundaries fall at every offset within a word
    for m in (1, 3, 7, 8, 9, 16):
        for chunk in (None, "", "c" * ((n + m) % 11), "é" * (n % 5)):
            k = CacheKey("x" * n, "y" * m, chunk)
            assert k._fingerprint() == expected_fingerprint(k)


@pytest.mark.parametrize("n", LENGTHS)
def test_fingerprint_deterministic_across_word_boundaries(n: int) -> None:
    fields = ("h" * n, "m" * (21 - n), "c" * (n // 2))
    a, b = CacheKey(*fields), CacheKey(*fields)
    assert a._fingerprint() == b._fingerprint()
    # one byte more or less anywhere gives another fingerprint
    others = {
        CacheKey("h" * (n + 1), fields[1], fields[2])._fingerprint(),
        CacheKey(fields[0], fields[1] + "m", fields[2])._fingerprint(),
        CacheKey(fields[0], fields[1], fields[2] + "c")._fingerprint(),
        CacheKey(fields[0][:-1] + "H", fields[1], fields[2])._fingerprint(),
    }
    assert a._fingerprint() not in others
    assert len(others) == 4


def test_fingerprints_of_many_keys_are_distinct() -> None:
    keys = {
        CacheKey("a" * i, "b" * j, None if k < 0 else "c" * k)
        for i in range(1, 18)
        for j in range(1, 18)
        for k in range(-1, 10)
    }
    fingerprints = {k._fingerprint() for k in keys}
    assert len(fingerprints) == len(keys)
    # the same strings moved between fields give different keys too
    assert len({CacheKey("a" * i, "a" * (20 - i))._fingerprint() for i in range(1, 20)}) == 19


def test_long_fields() -> None:
    big = "z" * 100_003
    k = CacheKey(big, "m", big)
    assert k._fingerprint() == expected_fingerprint(k)
    assert k == CacheKey(big, "m", big)
