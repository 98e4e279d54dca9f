"""CacheKey.digest: BLAKE2b-256 of the canonical key encoding, stable across
processes and releases; and the per-process index hash derived from it."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from conftest import run_python
from hypothesis import given
from hypothesis import strategies as st

from embcache import CacheKey
from embcache._core import hash_key, key_hash


def canonical(content_hash: str, model_version: str, chunk_id: str | None) -> bytes:
    """The encoding docs/guide/keys.md documents: each required field as its UTF-8 length
    (u64 LE) and bytes, then 0x00 for no chunk_id or 0x01, length and bytes."""
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


# Pinned: a digest names entries in snapshots and in Redis, so it must never change.
@pytest.mark.parametrize(
    ("fields", "digest_hex"),
    [
        (("a", "b", None), "4910372688d1130b243747306bfccbd0f13199530a9e6cdbab38f8be67ee2fb4"),
        (("a", "b", ""), "c59b695b8ce3d2d2b1f816365d1885ccca88b7e871ef98af60d7544f127ba7cc"),
        (("a:b", "c", None), "25248fbf1c96d447d97b9a132e82e6dd4d1231c097d28fa6b9007a6b55367709"),
        (("3f7a", "text-embedding-3-small", "chunk_12"),
         "7d92a1195f463602f0e872d573350267df97e497cb5664af5e2dea05ac39a234"),
    ],
)
def test_pinned_digests(fields: tuple[str, str, str | None], digest_hex: str) -> None:
    assert CacheKey(*fields).digest.hex() == digest_hex


@given(st.text(min_size=1), st.text(min_size=1), st.none() | st.text())
def test_digest_matches_hashlib_for_any_fields(h: str, m: str, c: str | None) -> None:
    try:
        enc = canonical(h, m, c)
    except UnicodeEncodeError:
        return  # lone surrogates: CacheKey rejects them too (test_key)
    assert CacheKey(h, m, c).digest == hashlib.blake2b(enc, digest_size=32).digest()


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100, 110, 111, 112, 127, 128, 129, 300])
def test_digest_across_block_boundaries(n: int) -> None:
    # the encoding's length crosses BLAKE2b's 128-byte block at these sizes
    h = "h" * (n + 1)
    k = CacheKey(h, "m", "c" * n)
    assert k.digest == hashlib.blake2b(canonical(h, "m", "c" * n), digest_size=32).digest()


def test_hash_is_the_key_hash_of_the_digest_under_the_process_key() -> None:
    for k in (CacheKey("a", "b"), CacheKey("x" * 200, "m", "")):
        h = key_hash(hash_key(), k.digest)
        h = h - (1 << 64) if h >= 1 << 63 else h
        assert hash(k) == (-2 if h == -1 else h)


def test_digest_is_the_same_in_another_process_and_the_hash_is_not(tmp_path: Path) -> None:
    code = (
        "from embcache import CacheKey; k = CacheKey('a', 'b', 'c'); "
        "print(k.digest.hex(), hash(k))"
    )
    out = run_python(["-c", code], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    digest_hex, other_hash = out.stdout.split()
    k = CacheKey("a", "b", "c")
    assert digest_hex == k.digest.hex()
    assert int(other_hash) != hash(k)  # a fresh secret key per process (2**-64 to fail)


def test_many_keys_have_distinct_digests_and_hashes() -> None:
    keys = [CacheKey(f"{i}", "m", None if i % 3 else str(i)) for i in range(20_000)]
    assert len({k.digest for k in keys}) == len(keys)
    assert len({hash(k) for k in keys}) == len(keys)
