"""SharedEmbeddingCache.save / .load: the core's snapshot format, so a file saved
by either cache loads into the other bit for bit under each storage, with the
remaining TTL and the recency order (as far as CLOCK knows it); a corrupt or
truncated file is refused with the segment untouched."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from segments import fresh_segment_name, key_of, vector_of

from embcache import (
    ArgumentTypeError,
    ArgumentValueError,
    DimensionMismatchError,
    InvalidVectorError,
    SharedEmbeddingCache,
    SnapshotError,
    SyncEmbeddingCache,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

STORAGES = ["float32", "float16", "bfloat16", "int8"]
DIM = 24


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


@pytest.fixture
def other_name() -> Iterator[str]:
    yield from fresh_segment_name()


def keys(r: range) -> list:  # type: ignore[type-arg]
    return [key_of(i) for i in r]


def rows(r: range) -> np.ndarray:
    return np.stack([vector_of(i, DIM) * 100 for i in r])


def read(cache: SharedEmbeddingCache | SyncEmbeddingCache, r: range) -> tuple[bytes, list[bool]]:
    matrix, found = cache.get_many(keys(r))
    return matrix.tobytes(), found.tolist()


@pytest.mark.parametrize("storage", STORAGES)
def test_segment_to_segment_and_to_the_core_bit_exact(
    segment_name: str, other_name: str, tmp_path: Path, storage: str
) -> None:
    path = tmp_path / "seg.snap"
    with SharedEmbeddingCache(segment_name, 1000, 3600, 4, dim=DIM, storage=storage) as cache:
        cache.put_many(keys(range(300)), rows(range(300)))
        want = read(cache, range(300))
        assert cache.save(path) == 300
        assert cache.save(str(path)) == 300  # replaced in place, no temporary left
    assert sorted(os.listdir(tmp_path)) == ["seg.snap"]
    with SharedEmbeddingCache.load(path, other_name) as loaded:
        assert read(loaded, range(300)) == want
        assert (loaded.storage, loaded.dim, loaded.max_entries, loaded.ttl_seconds) == (
            storage,
            DIM,
            1000,
            3600.0,
        )
        info = loaded.get_cache_info()
        assert info.size == 300 and info.puts == 0 and info.hits == 300
        assert loaded.verify() == []
    core = SyncEmbeddingCache.load(path)
    assert core.get_cache_info().storage == storage and len(core) == 300
    assert read(core, range(300)) == want


@pytest.mark.parametrize("storage", STORAGES)
def test_core_to_segment_bit_exact(segment_name: str, tmp_path: Path, storage: str) -> None:
    path = tmp_path / "core.snap"
    core = SyncEmbeddingCache(1000, None, 4, dim=None, storage=storage)
    core.put_many(keys(range(200)), rows(range(200)))
    want = read(core, range(200))
    core.save(path)
    with SharedEmbeddingCache.load(path, segment_name) as loaded:
        assert loaded.storage == storage and loaded.dim == DIM and loaded.ttl_seconds is None
        assert read(loaded, range(200)) == want


def test_loading_with_another_storage_converts_or_refuses(
    segment_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "f32.snap"
    core = SyncEmbeddingCache(100, None, 1, dim=DIM)
    core.put_many(keys(range(10)), rows(range(10)))
    core.save(path)
    with SharedEmbeddingCache.load(path, segment_name, storage="bfloat16") as loaded:
        assert read(loaded, range(10)) == read(
            SyncEmbeddingCache.load(path, storage="bfloat16"), range(10)
        )
    SharedEmbeddingCache.unlink(segment_name)
    core.put(key_of(50), np.full(DIM, 70000.0, np.float32))
    core.save(path)
    with pytest.raises(InvalidVectorError, match="float16"):
        SharedEmbeddingCache.load(path, segment_name, storage="float16")
    assert not os.path.exists(f"/dev/shm/{segment_name}")


def test_recency_order_survives_as_far_as_clock_knows(
    segment_name: str, other_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "clock.snap"
    with SharedEmbeddingCache(segment_name, 400, None, 4, dim=DIM) as cache:
        assert cache.stripes == 1
        cache.put_many(keys(range(200)), rows(range(200)))
        cache.get_many(keys(range(150, 200)))  # reference bits: the most recent
        cache.save(path)
    core = SyncEmbeddingCache.load(path, max_entries=50)
    assert read(core, range(150, 200))[1] == [True] * 50
    core.put_many(keys(range(1000, 1050)), rows(range(1000, 1050)))
    core.get_many(keys(range(1000, 1050)))  # now the most recent in the core's LRU
    core.save(path)
    with SharedEmbeddingCache.load(path, other_name, max_entries=50) as small:
        assert read(small, range(1000, 1050))[1] == [True] * 50
        assert len(small) == 50


def test_remaining_ttl_is_carried_both_ways(
    segment_name: str, other_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "ttl.snap"
    with SharedEmbeddingCache(segment_name, 100, 2.0, 1, dim=DIM) as cache:
        cache.put_many(keys(range(10)), rows(range(10)))  # expires first
        time.sleep(1.2)
        cache.put_many(keys(range(10, 20)), rows(range(10, 20)))
        cache.save(path)
    time.sleep(1.0)  # keys 0-9 expired on disk, 10-19 have about 1 s left
    with SharedEmbeddingCache.load(path, other_name) as loaded:
        assert read(loaded, range(20))[1] == [False] * 10 + [True] * 10
        core = SyncEmbeddingCache.load(path)
        assert read(core, range(20))[1] == [False] * 10 + [True] * 10
        time.sleep(1.3)  # a fresh 2 s TTL would still hold them
        assert read(loaded, range(10, 20))[1] == [False] * 10
        assert read(core, range(10, 20))[1] == [False] * 10


def corrupt(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["row", "entry", "header", "truncated", "empty", "foreign"])
def test_a_bad_snapshot_is_refused_and_the_segment_untouched(
    segment_name: str, other_name: str, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "bad.snap"
    source = SyncEmbeddingCache(100, None, 1, dim=DIM, storage="int8")
    source.put_many(keys(range(50)), rows(range(50)))
    source.save(path)
    size = path.stat().st_size
    if damage == "row":
        corrupt(path, 160 + 5 * (DIM + 4) + 7)
    elif damage == "entry":
        corrupt(path, 160 + 50 * (DIM + 4) + 48 * 9 + 3)
    elif damage == "header":
        corrupt(path, 60)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: size - 20])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"not a snapshot at all" * 20)
    with SharedEmbeddingCache(segment_name, 100, None, 1, dim=DIM, storage="int8") as cache:
        cache.put_many(keys(range(40, 60)), rows(range(60, 80)))
        before = (read(cache, range(100)), len(cache), cache.get_cache_info().puts)
        with pytest.raises(SnapshotError, match="cannot load snapshot"):
            SharedEmbeddingCache.load(path, segment_name)
        assert (read(cache, range(100)), len(cache), cache.get_cache_info().puts) == before
    with pytest.raises(SnapshotError):
        SharedEmbeddingCache.load(path, other_name)
    assert not os.path.exists(f"/dev/shm/{other_name}")


def test_loading_into_an_existing_segment_needs_its_limits(
    segment_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "s.snap"
    source = SyncEmbeddingCache(100, None, 1, dim=DIM)
    source.put_many(keys(range(30)), rows(range(30)))
    source.save(path)
    with SharedEmbeddingCache(segment_name, 200, None, 1, dim=DIM) as cache:
        cache.put(key_of(500), vector_of(500, DIM))
        with pytest.raises(ArgumentValueError, match="max_entries is 200 there, 100 here"):
            SharedEmbeddingCache.load(path, segment_name)
        with pytest.raises(ArgumentValueError, match="storage is 'float32' there, 'int8' here"):
            SharedEmbeddingCache.load(path, segment_name, max_entries=200, storage="int8")
        assert len(cache) == 1
        with SharedEmbeddingCache.load(path, segment_name, max_entries=200) as same:
            assert len(same) == 31 and same.get_cache_info().puts == 31  # added as puts
        assert read(cache, range(30)) == read(source, range(30))


def test_several_dims_and_bad_arguments_are_refused(segment_name: str, tmp_path: Path) -> None:
    path = tmp_path / "dims.snap"
    core = SyncEmbeddingCache(100, None, 1)
    core.put(key_of(1), np.ones(4, np.float32))
    core.put(key_of(2), np.ones(8, np.float32))
    core.save(path)
    with pytest.raises(DimensionMismatchError, match="2 dims"):
        SharedEmbeddingCache.load(path, segment_name)
    with pytest.raises(ArgumentValueError):
        SharedEmbeddingCache.load(path, "bad name")
    with pytest.raises(ArgumentValueError):
        SharedEmbeddingCache.load(path, segment_name, storage="float64")
    with pytest.raises(FileNotFoundError):
        SharedEmbeddingCache.load(tmp_path / "none.snap", segment_name)
    assert not os.path.exists(f"/dev/shm/{segment_name}")


def test_load_takes_the_monitoring_label(
    segment_name: str, other_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "snap.embc"
    with SharedEmbeddingCache(other_name, 100, None, 4, dim=DIM) as source:
        source.put_many(keys(range(5)), rows(range(5)))
        source.save(path)
    # a bad label is refused before the file is read, and no segment is made
    with pytest.raises(ArgumentValueError, match="label"):
        SharedEmbeddingCache.load(tmp_path / "absent.embc", segment_name, label="no spaces")
    with pytest.raises(ArgumentTypeError, match="label"):
        SharedEmbeddingCache.load(path, segment_name, label=5)
    assert not SharedEmbeddingCache.unlink(segment_name)
    with SharedEmbeddingCache.load(path, segment_name, label="warm:copy") as loaded:
        assert loaded.name == "warm:copy" and "label='warm:copy'" in repr(loaded)
        assert read(loaded, range(5)) == (rows(range(5)).tobytes(), [True] * 5)
        # into the existing segment, under another label; the default is its name
        with SharedEmbeddingCache.load(path, segment_name, label="second") as again:
            assert again.name == "second"
        with SharedEmbeddingCache.load(path, segment_name) as plain:
            assert plain.name == segment_name
