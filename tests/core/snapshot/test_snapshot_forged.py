"""Snapshots: files that are not intact snapshots (foreign, truncated, corrupt,
forged with their checksums recomputed) are refused with SnapshotError, and a
mutation fuzz of the loader: every load is exact or refused."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import by_profile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snapshot_format import (
    HEADER,
    RECORD,
    TRAILER,
    Parsed,
    block_sum,
    fill,
    load_bytes,
    read_all,
    save_sample,
)

import embcache
from embcache import (
    CacheKey,
    DimensionMismatchError,
    EmbcacheError,
    SnapshotError,
    SyncEmbeddingCache,
)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, SyncEmbeddingCache, list[CacheKey]]:
    """A snapshot of 30 entries of dims 3 and 5 (no TTL)."""
    return save_sample(tmp_path)


# --- bad files ---------------------------------------------------------------------------


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SyncEmbeddingCache.load(tmp_path / "nope.snap")
    with pytest.raises(IsADirectoryError):
        SyncEmbeddingCache.load(tmp_path)


def test_snapshot_error_is_both() -> None:
    assert issubclass(SnapshotError, EmbcacheError) and issubclass(SnapshotError, ValueError)
    assert embcache.SnapshotError is SnapshotError


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"EMBCSNAP", "shorter than the 128-byte header"),
        (b"PK\x03\x04" + bytes(300), "not an embcache snapshot"),
        (b"\x93NUMPY" + bytes(300), "not an embcache snapshot"),
        (b"x" * 4096, "not an embcache snapshot"),
    ],
)
def test_foreign_files(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        load_bytes(tmp_path, data)


def test_every_truncation_is_rejected(
    saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]], tmp_path: Path
) -> None:
    data = saved[0].read_bytes()
    for cut in range(0, len(data), 7):
        with pytest.raises(SnapshotError):
            load_bytes(tmp_path, data[:cut])
    with pytest.raises(SnapshotError, match="trailing"):
        load_bytes(tmp_path, data + b"\0")


@pytest.mark.parametrize("where", ["header", "block", "entries", "groups"])
def test_bit_flip_in_each_section(
    saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]], tmp_path: Path, where: str
) -> None:
    data = bytearray(saved[0].read_bytes())
    p = Parsed(bytes(data))
    pos = {
        "header": 40,
        "block": HEADER + 17,
        "entries": p.h["entries_offset"] + 50,
        "groups": p.h["groups_offset"] + 3,
    }[where]
    data[pos] ^= 0x10
    with pytest.raises(SnapshotError, match="checksum|corrupt|records|group"):
        load_bytes(tmp_path, bytes(data))


def test_other_version_byte_order_and_schemes(
    saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]], tmp_path: Path
) -> None:
    p = Parsed(saved[0].read_bytes())
    for field, value, message in [
        ("version", 4, "format version 4"),
        ("storage", 4, "storage 4"),
        ("version", 0, "format version 0"),
        ("byte_order", 0x04030201, "big-endian"),
        ("digest_scheme", 9, "digest scheme 9"),
        ("checksum_scheme", 4, "checksum scheme 4"),
        ("max_entries", 0, "max_entries=0"),
        ("max_memory_mb", float("nan"), "max_memory_mb"),
        ("ttl_seconds", -1.0, "ttl_seconds"),
        ("flags", 1, "unknown layout"),
    ]:
        q = Parsed(p.build())
        q.h[field] = value
        with pytest.raises(SnapshotError, match=message):
            load_bytes(tmp_path, q.build())


def test_forged_counts_are_bounded_by_the_file(
    saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]], tmp_path: Path
) -> None:
    p = Parsed(saved[0].read_bytes())
    for field, value in [
        ("n_entries", 2**63),
        ("n_entries", 31),
        ("n_groups", 2**32 - 1),
        ("n_groups", 3),
        ("fixed_dim", 2**50),
    ]:
        q = Parsed(p.build())
        q.h[field] = value
        with pytest.raises(SnapshotError):
            load_bytes(tmp_path, q.build(fix=False if field != "n_entries" else True))
    for change in [(0, 2**62), (0, 0), (1, 10**12), (1, 0), (0, 5)]:
        q = Parsed(p.build())
        recs = q.group_records()
        recs[0][change[0]] = change[1]
        q.set_groups(recs)
        with pytest.raises(SnapshotError):
            load_bytes(tmp_path, q.build())


def test_forged_nan_vector_and_duplicate_digest(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(10, None, 1, dim=4)
    fill(c, 3)
    path = tmp_path / "f.snap"
    c.save(path)
    p = Parsed(path.read_bytes())
    q = Parsed(p.build())
    blocks = bytearray(q.blocks)
    blocks[4:8] = struct.pack("<f", float("nan"))
    q.blocks = bytes(blocks)
    recs = q.group_records()
    recs[0][2] = block_sum(q.blocks, q.h["file_id"], 0)
    q.set_groups(recs)
    with pytest.raises(SnapshotError, match="NaN"):
        load_bytes(tmp_path, q.build())
    q = Parsed(p.build())
    q.entries = q.entries[:RECORD] + q.entries[:RECORD] + q.entries[2 * RECORD :]
    with pytest.raises(SnapshotError, match="repeat"):
        load_bytes(tmp_path, q.build())


def test_bad_load_keywords(saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]]) -> None:
    path, _, _ = saved
    for kw, exc in [
        ({"max_entries": "x"}, TypeError),
        ({"max_entries": 0}, ValueError),
        ({"ttl_seconds": float("nan")}, ValueError),
        ({"max_memory_mb": -1}, ValueError),
        ({"dim": 0}, ValueError),
        ({"clock": 5}, TypeError),
        ({"dim": 3}, DimensionMismatchError),
        ({"policy": 3}, TypeError),
        ({"policy": "mru"}, ValueError),
    ]:
        with pytest.raises(exc):
            SyncEmbeddingCache.load(path, **kw)
    with pytest.raises(TypeError):
        SyncEmbeddingCache.load(path, 10)  # keywords only
    with pytest.raises(TypeError):
        SyncEmbeddingCache.load(path, tier=None)  # the sync core has no tier


# --- mutation fuzz -----------------------------------------------------------------------

FUZZ_EXAMPLES = by_profile(default=50, ci=150)


@pytest.fixture(scope="module")
def fuzz_base(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[bytes, dict[CacheKey, bytes], list[CacheKey]]:
    c = SyncEmbeddingCache(100, None, 4)
    keys = fill(c, 12, dims=(3, 5, 2))
    c.get(keys[4])
    path = tmp_path_factory.mktemp("fuzz") / "base.snap"
    c.save(path)
    return path.read_bytes(), read_all(c, keys), keys


def exact_or_snapshot_error(
    tmp_path: Path,
    data: bytes,
    expected: dict[CacheKey, bytes],
    keys: list[CacheKey],
    subset: bool = False,
) -> str:
    """Load `data`: SnapshotError ("rejected"), or a consistent cache holding
    exactly the saved entries ("loaded"; with `subset`, for forged files whose
    checksums were recomputed, some of them, each exact)."""
    try:
        loaded = load_bytes(tmp_path, data)
    except SnapshotError:
        return "rejected"
    loaded._check_invariants()
    got = read_all(loaded, keys)
    assert len(loaded) == len(got)
    if subset:
        assert all(expected[k] == v for k, v in got.items())
    else:
        assert got == expected
    return "loaded"


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=4))
def test_fuzz_bit_flips(fuzz_base: Any, tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data, expected, keys = fuzz_base
    b = bytearray(data)
    for pos, bit in flips:
        b[pos % len(b)] ^= 1 << bit
    exact_or_snapshot_error(tmp_path, bytes(b), expected, keys)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(cut=st.integers(0, 10**6), extra=st.binary(max_size=64))
def test_fuzz_truncation_and_appending(
    fuzz_base: Any, tmp_path: Path, cut: int, extra: bytes
) -> None:
    data, expected, keys = fuzz_base
    cut %= len(data) + 1
    mutant = data[:cut] + (extra if cut == len(data) else b"")
    assert exact_or_snapshot_error(tmp_path, mutant, expected, keys) == (
        "loaded" if mutant == data else "rejected"
    )


FIELDS64 = st.sampled_from(
    ["n_entries", "fixed_dim", "max_entries", "file_bytes", "entries_offset", "groups_offset"]
)
HUGE = st.one_of(
    st.integers(0, 64), st.sampled_from([2**31, 2**32 - 1, 2**40, 2**40 + 1, 2**62, 2**64 - 1])
)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    field=FIELDS64,
    value=HUGE,
    group=st.integers(0, 2),
    column=st.integers(0, 1),
    gvalue=HUGE,
    fix=st.booleans(),
    n_groups=st.sampled_from([None, 0, 1, 4, 2**32 - 1]),
)
def test_fuzz_inflated_counts_and_dims(
    fuzz_base: Any,
    tmp_path: Path,
    field: str,
    value: int,
    group: int,
    column: int,
    gvalue: int,
    fix: bool,
    n_groups: int | None,
) -> None:
    data, expected, keys = fuzz_base
    p = Parsed(data)
    p.h[field] = value
    if n_groups is not None:
        p.h["n_groups"] = n_groups
    recs = p.group_records()
    recs[group % len(recs)][column] = gvalue
    p.set_groups(recs)
    exact_or_snapshot_error(tmp_path, p.build(fix=fix), expected, keys, subset=True)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    perm=st.permutations([0, 1, 2, 3, 4]),
    swap_entries=st.tuples(st.integers(0, 11), st.integers(0, 11)),
)
def test_fuzz_reordered_sections(
    fuzz_base: Any, tmp_path: Path, perm: list[int], swap_entries: tuple[int, int]
) -> None:
    """The file's own bytes moved around (blocks, entries, groups; two entry
    records swapped), no checksum recomputed: anything but the original is
    rejected."""
    data, expected, keys = fuzz_base
    p = Parsed(data)
    sizes = [r[0] * r[1] * 4 for r in p.group_records()]
    starts = np.cumsum([HEADER, *sizes])
    eo, go = p.h["entries_offset"], p.h["groups_offset"]
    ents = [data[eo + k * RECORD : eo + (k + 1) * RECORD] for k in range(12)]
    i, j = swap_entries
    ents[i], ents[j] = ents[j], ents[i]
    pieces = [data[starts[k] : starts[k + 1]] for k in range(3)]
    pieces += [b"".join(ents) + data[go - TRAILER : go], data[go:]]
    mutant = data[:HEADER] + b"".join(pieces[k] for k in perm)
    outcome = exact_or_snapshot_error(tmp_path, mutant, expected, keys)
    assert outcome == ("loaded" if mutant == data else "rejected")
