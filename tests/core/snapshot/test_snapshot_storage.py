"""Snapshots of compact rows: the file records the storage and holds the rows'
bytes as the cache held them; a load restores them byte for byte (nothing
rounded again), a load with another storage= converts each vector (decoded,
then encoded), refusing with nothing loaded a value the new storage cannot
hold; version-2 files (float32 rows, no storage field) still load."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import key
from snapshot_format import Parsed, block_sum, load_bytes, section_bounds

from embcache import InvalidVectorError, SnapshotError, SyncEmbeddingCache
from embcache._core import SNAPSHOT_VERSION, decode_rows, encode_rows, row_bytes

STORAGES = ["float32", "float16", "bfloat16", "int8"]


def stored(rows: np.ndarray, storage: str) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return decode_rows(encode_rows(rows, storage), storage, rows.shape[1])


def filled(storage: str, dims: tuple[int, ...] = (3, 5)) -> tuple[SyncEmbeddingCache, dict]:
    """A cache of `storage` holding 24 entries of `dims`; key -> the float32 put."""
    c = SyncEmbeddingCache(100, None, 4, storage=storage)
    rng = np.random.default_rng(7)
    put = {}
    for i in range(24):
        v = (rng.standard_normal(dims[i % len(dims)]) * 100).astype(np.float32)
        c.put(key(i), v)
        put[key(i)] = v
    return c, put


def answers(c: SyncEmbeddingCache, keys: list) -> dict:
    return {k: c.get(k).tobytes() for k in keys}  # type: ignore[union-attr]


@pytest.mark.parametrize("storage", STORAGES)
def test_the_file_records_the_storage_and_its_row_bytes(storage: str, tmp_path: Path) -> None:
    c, put = filled(storage)
    path = tmp_path / "c.snap"
    assert c.save(path) == 24
    data = path.read_bytes()
    p = Parsed(data)
    assert p.h["version"] == SNAPSHOT_VERSION == 3
    assert p.h["storage"] == STORAGES.index(storage)
    assert len(p.blocks) == 12 * (row_bytes(storage, 3) + row_bytes(storage, 5))
    # the blocks are the encodings of the vectors put, least recent first per group
    by_dim = {3: [], 5: []}  # type: dict[int, list[np.ndarray]]
    for v in put.values():
        by_dim[len(v)].append(v)
    first = 3 if p.group_records()[0][0] == 3 else 5
    second = 8 - first
    want = b"".join(encode_rows(np.stack(by_dim[d]), storage).tobytes() for d in (first, second))
    assert p.blocks == want
    assert section_bounds(data)[-1] == len(data)


@pytest.mark.parametrize("storage", STORAGES)
def test_a_load_restores_the_rows_byte_for_byte(storage: str, tmp_path: Path) -> None:
    c, put = filled(storage)
    path = tmp_path / "c.snap"
    c.save(path)
    loaded = SyncEmbeddingCache.load(path)
    assert loaded.storage == storage and loaded.get_cache_info().storage == storage
    assert answers(loaded, list(put)) == answers(c, list(put))
    assert loaded.get_cache_info().memory_usage_bytes == c.get_cache_info().memory_usage_bytes
    loaded._check_invariants()
    # saved again, the blocks are the same bytes: nothing was rounded a second time
    again = tmp_path / "again.snap"
    loaded.save(again)
    assert Parsed(again.read_bytes()).blocks == Parsed(path.read_bytes()).blocks


@pytest.mark.parametrize("source", STORAGES)
@pytest.mark.parametrize("target", STORAGES)
def test_a_load_into_another_storage_converts(source: str, target: str, tmp_path: Path) -> None:
    c, put = filled(source)
    path = tmp_path / "c.snap"
    c.save(path)
    loaded = SyncEmbeddingCache.load(path, storage=target)
    assert loaded.storage == target
    for k in put:
        held = c.get(k)
        assert held is not None
        want = stored(held[None], target)[0]  # decoded, then encoded in the target
        got = loaded.get(k)
        assert got is not None and got.tobytes() == want.tobytes()
    info = loaded.get_cache_info()
    assert info.memory_usage_bytes == 12 * (
        row_bytes(target, 3) + row_bytes(target, 5) + 2 * info.entry_overhead_bytes
    )
    loaded._check_invariants()


@pytest.mark.parametrize("source", ["float32", "bfloat16", "int8"])
def test_a_value_float16_cannot_hold_fails_the_whole_load(source: str, tmp_path: Path) -> None:
    c, put = filled(source)
    big = np.array([1.0, -2.0, 1e6], np.float32)
    c.put(key("big"), big)
    path = tmp_path / "c.snap"
    c.save(path)
    with pytest.raises(InvalidVectorError) as err:
        SyncEmbeddingCache.load(path, storage="float16")
    message = str(err.value)
    assert "float16" in message and "65504" in message and "nothing was loaded" in message
    assert "value [2]" in message and str(path) in message
    assert key("big").digest.hex() in message
    # the same file loads as it is, or into a storage that holds the value
    assert SyncEmbeddingCache.load(path).get(key("big")) is not None
    assert len(SyncEmbeddingCache.load(path, storage="int8")) == 25


def test_a_version_2_file_loads_as_float32(tmp_path: Path) -> None:
    """Version 2 is version 3 with float32 rows and 0 where the storage is."""
    c, put = filled("float32")
    path = tmp_path / "c.snap"
    c.save(path)
    p = Parsed(path.read_bytes())
    p.h["version"] = 2
    v2 = load_bytes(tmp_path, p.build())
    assert v2.storage == "float32"
    assert answers(v2, list(put)) == answers(c, list(put))
    as_int8 = load_bytes(tmp_path, p.build(), storage="int8")
    k = next(iter(put))
    got = as_int8.get(k)
    assert got is not None and got.tobytes() == stored(put[k][None], "int8")[0].tobytes()
    p.h["storage"] = 1  # version 2 has no storage: the field is reserved
    with pytest.raises(SnapshotError, match="unknown layout"):
        load_bytes(tmp_path, p.build())


@pytest.mark.parametrize("storage", ["float16", "bfloat16", "int8"])
def test_a_compact_row_that_decodes_to_nan_is_refused(storage: str, tmp_path: Path) -> None:
    """A forged block (checksums recomputed) whose row decodes to NaN or infinity."""
    c, _ = filled(storage, dims=(4,))
    path = tmp_path / "c.snap"
    c.save(path)
    p = Parsed(path.read_bytes())
    blocks = bytearray(p.blocks)
    if storage == "int8":
        blocks[0:4] = struct.pack("<f", float("inf"))  # the first row's scale
    else:
        blocks[0:2] = b"\x00\x7c" if storage == "float16" else b"\x80\x7f"  # +inf
    p.blocks = bytes(blocks)
    # the block's checksum, recorded in its group, made right for the forgery
    groups = p.group_records()
    groups[0][2] = block_sum(p.blocks, p.h["file_id"], 0)
    p.set_groups(groups)
    with pytest.raises(SnapshotError, match="NaN or infinity"):
        load_bytes(tmp_path, p.build())
