"""A fuzzer mutates segment headers before attach: random bytes of the header are
changed, with the checksum resealed or not, and the file cut. Every attach
either raises SharedSegmentError (the file left as it was) or succeeds, and then
every vector it reads is exactly the one stored and the cache goes on working (a
forged but consistent header, another hash key say, may make entries
unreachable; it may not make them wrong)."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import struct
import sys
from pathlib import Path

import pytest
from conftest import by_profile
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from segments import HEADER_CHECKSUM_AT, fresh_segment_name, key_of, vector_of

from embcache import SharedEmbeddingCache, SharedSegmentError
from embcache._core import snapshot_checksum

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

SEED = 0x656D6263736D3031
DIM = 8
HEADER_END = HEADER_CHECKSUM_AT + 8


@functools.cache
def pristine() -> bytes:
    """The bytes of a small segment holding keys 0-49."""
    name = next(fresh_segment_name())
    with SharedEmbeddingCache(name, 300, None, 1, dim=DIM) as cache:
        for i in range(50):
            cache.put(key_of(i), vector_of(i, DIM))
    data = Path(f"/dev/shm/{name}").read_bytes()
    SharedEmbeddingCache.unlink(name)
    return data


@settings(
    max_examples=by_profile(default=150, ci=2000),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    changes=st.lists(
        st.tuples(st.integers(0, HEADER_END - 1), st.integers(0, 255)), min_size=1, max_size=6
    ),
    reseal=st.booleans(),
    cut=st.sampled_from([None, None, None, 0, 1, 4096, -1]),
)
@example(changes=[(155, 0x5A)], reseal=True, cut=None)  # another hash key: accepted
@example(changes=[(64, 0x2D)], reseal=True, cut=None)  # other max_entries: refused
def test_mutated_headers_are_refused_or_read_true(
    tmp_path_factory: pytest.TempPathFactory,
    changes: list[tuple[int, int]],
    reseal: bool,
    cut: int | None,
) -> None:
    data = bytearray(pristine())
    for at, value in changes:
        data[at] = value
    if reseal:
        struct.pack_into(
            "<Q",
            data,
            HEADER_CHECKSUM_AT,
            snapshot_checksum(bytes(data[:HEADER_CHECKSUM_AT]), SEED),
        )
    if cut is not None:
        data = data[:cut] if cut >= 0 else data[:cut]
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "seg"
    path.write_bytes(bytes(data))
    os.chmod(path, 0o600)
    before = hashlib.sha256(bytes(data)).hexdigest()
    try:
        cache = SharedEmbeddingCache.attach(str(path))
    except SharedSegmentError:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    else:
        with cache:
            assert cache.dim == DIM  # another dim cannot give the same layout and size
            for i in range(50):
                got = cache.get(key_of(i))
                assert got is None or got.tobytes() == vector_of(i, DIM).tobytes()
            cache.put(key_of(1000), vector_of(1000, DIM))  # and it goes on working
            got = cache.get(key_of(1000))
            if cache.ttl_seconds is None or cache.ttl_seconds > 60:  # not a TTL of nothing
                assert got is not None
            assert got is None or got.tobytes() == vector_of(1000, DIM).tobytes()
    finally:
        shutil.rmtree(folder)
