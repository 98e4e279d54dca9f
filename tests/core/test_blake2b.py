"""BLAKE2b (RFC 7693), the hash behind CacheKey.digest, against the RFC's
Appendix A example, known-answer vectors and CPython's independent hashlib."""

from __future__ import annotations

import hashlib
import random

import pytest
from blake2b_vectors import RFC_ABC_512, VECTORS

from embcache import ArgumentValueError
from embcache._core import blake2b


def test_rfc_7693_appendix_a() -> None:
    assert blake2b(b"abc").hex() == RFC_ABC_512


@pytest.mark.parametrize(("key_hex", "data_hex", "outlen", "digest_hex"), VECTORS)
def test_known_answers(key_hex: str, data_hex: str, outlen: int, digest_hex: str) -> None:
    out = blake2b(bytes.fromhex(data_hex), outlen, bytes.fromhex(key_hex))
    assert out.hex() == digest_hex


def test_against_hashlib_for_random_lengths_sizes_and_keys() -> None:
    rng = random.Random(7693)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 700))
        size = rng.randrange(1, 65)
        key = rng.randbytes(rng.choice([0, 0, 1, 16, 32, 64]))
        assert blake2b(data, size, key) == hashlib.blake2b(data, digest_size=size, key=key).digest()


@pytest.mark.parametrize(("size", "key"), [(0, b""), (65, b""), (32, bytes(65))])
def test_out_of_range_lengths_are_rejected(size: int, key: bytes) -> None:
    with pytest.raises(ArgumentValueError, match="digest_size of 1-64"):
        blake2b(b"x", size, key)
