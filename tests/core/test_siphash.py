"""SipHash-2-4 (which places keys in the index) against the specification's test
vectors."""

from __future__ import annotations

import pytest
from siphash_vectors import VECTORS_64, VECTORS_128

from embcache._core import hash_key, siphash24

SPEC_KEY = bytes(range(16))


def test_vector_tables_are_complete() -> None:
    assert len(VECTORS_64) == 64 and len(VECTORS_128) == 64
    assert all(len(bytes.fromhex(v)) == 8 for v in VECTORS_64)
    assert all(len(bytes.fromhex(v)) == 16 for v in VECTORS_128)


@pytest.mark.parametrize("length", range(64))
def test_siphash64_vectors(length: int) -> None:
    out = siphash24(SPEC_KEY, bytes(range(length)))
    assert out.hex() == VECTORS_64[length]


@pytest.mark.parametrize("length", range(64))
def test_siphash128_vectors(length: int) -> None:
    out = siphash24(SPEC_KEY, bytes(range(length)), True)
    assert out.hex() == VECTORS_128[length]


def test_out128_keyword_and_default() -> None:
    assert siphash24(SPEC_KEY, b"") == bytes.fromhex(VECTORS_64[0])
    assert siphash24(SPEC_KEY, b"", out128=False) == bytes.fromhex(VECTORS_64[0])
    assert siphash24(SPEC_KEY, b"", out128=True) == bytes.fromhex(VECTORS_128[0])


@pytest.mark.parametrize("bad", [b"", bytes(15), bytes(17), bytes(32)])
def test_key_must_be_16_bytes(bad: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        siphash24(bad, b"data")


def test_arguments_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="'key' has incorrect type.*expected bytes, got str"):
        siphash24("0123456789abcdef", b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'data' has incorrect type.*expected bytes, got str"):
        siphash24(SPEC_KEY, "text")  # type: ignore[arg-type]


def test_hash_key_is_16_random_bytes_fixed_for_the_process() -> None:
    k = hash_key()
    assert isinstance(k, bytes) and len(k) == 16
    assert hash_key() == k
    assert k != bytes(16)
