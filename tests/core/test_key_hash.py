"""The index hash (core/keyhash.h): a key's digest mixed with a secret 16-byte
key, against a pure-Python statement of the same arithmetic; its arguments
checked; keys spread evenly over an index's cells."""

from __future__ import annotations

import os

import pytest

from embcache import CacheKey
from embcache._core import hash_key, key_hash

M64 = (1 << 64) - 1


def mum(a: int, b: int) -> int:
    """64 x 64 -> 128-bit product, its halves xored."""
    r = a * b
    return (r & M64) ^ (r >> 64)


def model(key: bytes, digest: bytes) -> int:
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
    d = [int.from_bytes(digest[i : i + 8], "little") for i in range(0, 32, 8)]
    x = mum(d[0] ^ k0, d[1] ^ k1 ^ 0xA0761D6478BD642F)
    y = mum(d[2] ^ k1, d[3] ^ k0 ^ 0xE7037ED1A0B428DB)
    return mum(x ^ 0x8EBC6AF09C88C6E3, y ^ 0x589965CC75374CC3)


def test_key_hash_is_the_stated_mix() -> None:
    for _ in range(2000):
        key, digest = os.urandom(16), os.urandom(32)
        assert key_hash(key, digest) == model(key, digest)
    for key, digest in ((bytes(16), bytes(32)), (b"\xff" * 16, b"\xff" * 32)):
        assert key_hash(key, digest) == model(key, digest)


def test_a_cache_key_hashes_to_its_digest_under_the_process_key() -> None:
    for k in (CacheKey("a", "b"), CacheKey("x" * 200, "m", ""), CacheKey("é", "m", "7")):
        h = key_hash(hash_key(), k.digest)
        signed = h - (1 << 64) if h >= 1 << 63 else h
        assert hash(k) == (-2 if signed == -1 else signed)


@pytest.mark.parametrize("bad", [b"", bytes(15), bytes(17), bytes(32)])
def test_the_key_must_be_16_bytes(bad: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        key_hash(bad, bytes(32))


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), bytes(64)])
def test_the_digest_must_be_32_bytes(bad: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        key_hash(bytes(16), bad)


def test_arguments_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="'key' has incorrect type.*expected bytes, got str"):
        key_hash("0123456789abcdef", bytes(32))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'digest' has incorrect type.*expected bytes"):
        key_hash(bytes(16), bytearray(32))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        key_hash(None, bytes(32))  # type: ignore[arg-type]


def test_hash_key_is_16_random_bytes_fixed_for_the_process() -> None:
    k = hash_key()
    assert isinstance(k, bytes) and len(k) == 16
    assert hash_key() == k
    assert k != bytes(16)


def test_keys_that_differ_in_one_field_spread_over_the_cells() -> None:
    # 65,536 keys of one model, numbered: the low 10 bits (an index of 1,024
    # cells) fill every cell near evenly (mean 64; a fair spread stays well within
    # 64 +/- 40)
    counts = [0] * 1024
    for i in range(65536):
        counts[hash(CacheKey(f"doc-{i}", "model-v1", str(i % 7))) & 1023] += 1
    assert min(counts) > 24 and max(counts) < 104, (min(counts), max(counts))
