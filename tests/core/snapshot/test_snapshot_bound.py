"""Snapshots: one save's file is bound together (a mix of two saves' bytes is
refused), version-1 files still load, loading under any policy and smaller
limits keeps exactly the most recent entries that fit, and the paths a save is
given (long names, symbolic links, a "folder" that is a file)."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import by_profile, entry_bytes, key, vec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snapshot_format import HEADER, Parsed, read_all, section_bounds

from embcache import (
    CacheKey,
    EmbcacheError,
    EmbeddingCache,
    EntryTooLargeError,
    SnapshotError,
    SnapshotFolderError,
    SyncEmbeddingCache,
)

DATA = Path(__file__).resolve().parents[2] / "data"


# --- warm start under every policy and smaller limits ------------------------------------


def test_full_lru_cache_loads_under_tinylfu(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(100_000, None, 1, dim=384)
    keys = [CacheKey(f"doc-{i}", "m") for i in range(5_000)]
    for i, k in enumerate(keys):
        c.put(k, np.full(384, i, np.float32))
    path = tmp_path / "full.snap"
    saved = c.save(path)
    assert saved == len(c) > 0
    loaded = SyncEmbeddingCache.load(path, policy="tinylfu")
    loaded._check_invariants()
    info = loaded.get_cache_info()
    per_entry = info.entry_overhead_bytes + 384 * 4
    fit = (info.memory_budget_bytes - info.policy_bytes) // per_entry
    assert len(loaded) == fit  # the most recent `fit` of the saved entries, exactly
    survivors = {k for k in keys if k in loaded}
    assert survivors == set(keys[5_000 - fit :])
    assert read_all(loaded, keys[-3:]) == read_all(c, keys[-3:])

    async def opened() -> int:
        async with EmbeddingCache.open(path, policy="tinylfu") as cache:
            return len(cache)

    assert asyncio.run(opened()) == fit


def _lru_cache(n: int, dims: tuple[int, ...]) -> tuple[SyncEmbeddingCache, list[CacheKey]]:
    c = SyncEmbeddingCache(1_000, None, 4)
    keys = [key(i) for i in range(n)]
    for i, k in enumerate(keys):
        c.put(k, vec(i, dims[i % len(dims)]))
    return c, keys  # least recent first


@pytest.mark.parametrize("policy", ["lru", "tinylfu"])
@pytest.mark.parametrize("limits", ["same", "entries", "memory", "both"])
@pytest.mark.parametrize("dims", [(16,), (8, 24)])
def test_smaller_limits_keep_exactly_the_most_recent_that_fit(
    tmp_path: Path, policy: str, limits: str, dims: tuple[int, ...]
) -> None:
    c, keys = _lru_cache(60, dims)
    path = tmp_path / "s.snap"
    assert c.save(path) == 60
    kw: dict[str, object] = {"policy": policy}
    budget = None
    if limits in ("entries", "both"):
        kw["max_entries"] = 25
    if limits in ("memory", "both"):
        budget = 30 * entry_bytes(max(dims)) + 5
        kw["max_memory_mb"] = budget / 2**20
    loaded = SyncEmbeddingCache.load(path, **kw)  # type: ignore[arg-type]
    loaded._check_invariants()
    info = loaded.get_cache_info()
    # walk from the most recent, keeping entries while they fit, as a put charges them
    used, expect = info.policy_bytes, []
    for i in range(59, -1, -1):
        need = dims[i % len(dims)] * 4 + info.entry_overhead_bytes
        if len(expect) == loaded.max_entries or used + need > info.memory_budget_bytes:
            break
        expect.append(keys[i])
        used += need
    assert {k for k in keys if k in loaded} == set(expect)
    assert info.memory_usage_bytes == used
    if limits != "same":
        assert len(expect) < 60
    assert read_all(loaded, expect) == read_all(c, expect)
    assert info.evictions == 0 and info.admission_rejections == 0


def test_repeated_digest_still_fails_with_its_own_message(tmp_path: Path) -> None:
    c, _ = _lru_cache(4, (4,))
    path = tmp_path / "d.snap"
    c.save(path)
    p = Parsed(path.read_bytes())
    p.entries = p.entries[:48] + p.entries[:48] + p.entries[96:]
    (tmp_path / "dup.snap").write_bytes(p.build())
    for policy in ("lru", "tinylfu"):
        with pytest.raises(SnapshotError, match="repeat another entry's key digest"):
            SyncEmbeddingCache.load(tmp_path / "dup.snap", policy=policy)
    # a TTL below the clock's resolution (now + ttl == now) makes the repeat land on
    # an already expired first copy: still the same SnapshotError
    for ttl in (10.0, 1e-300):
        with pytest.raises(SnapshotError, match="repeat another entry's key digest"):
            SyncEmbeddingCache.load(tmp_path / "dup.snap", ttl_seconds=ttl)


def test_header_limits_that_cannot_hold_one_vector(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(10, None, 1, dim=64)
    c.put(key(1), vec(1, 64))
    path = tmp_path / "l.snap"
    c.save(path)
    p = Parsed(path.read_bytes())
    p.h["max_memory_mb"] = 100 / 2**20  # 100 bytes, with every checksum recomputed
    (tmp_path / "forged.snap").write_bytes(p.build())
    with pytest.raises(SnapshotError, match="cannot hold one vector"):
        SyncEmbeddingCache.load(tmp_path / "forged.snap")
    with pytest.raises(SnapshotError, match="cannot hold one vector"):
        SyncEmbeddingCache.load(tmp_path / "forged.snap", max_memory_mb=1)
    # the caller's own too-small limit is still the caller's error
    with pytest.raises(EntryTooLargeError):
        SyncEmbeddingCache.load(path, max_memory_mb=100 / 2**20)


# --- one save, one file -----------------------------------------------------------------


def _two_saves(tmp_path: Path) -> tuple[bytes, bytes, list[dict[CacheKey, bytes]], list[CacheKey]]:
    """Two saves of the same layout: a full fixed-dim cache, every vector changed."""
    c = SyncEmbeddingCache(12, None, 1, dim=8)
    keys = [key(i) for i in range(12)]
    c.put_many(keys, np.arange(96, dtype=np.float32).reshape(12, 8))
    c.save(tmp_path / "a.snap")
    first = read_all(c, keys)
    c.put_many(keys, -np.arange(96, dtype=np.float32).reshape(12, 8) - 1)
    c.save(tmp_path / "b.snap")
    a, b = (tmp_path / "a.snap").read_bytes(), (tmp_path / "b.snap").read_bytes()
    assert len(a) == len(b) and Parsed(a).h["entries_offset"] == Parsed(b).h["entries_offset"]
    return a, b, [first, read_all(c, keys)], keys


def _mixed_load(tmp_path: Path, data: bytes, files: tuple[bytes, bytes],
                want: list[dict[CacheKey, bytes]], keys: list[CacheKey]) -> str:  # fmt: skip
    (tmp_path / "mix.snap").write_bytes(data)
    try:
        loaded = SyncEmbeddingCache.load(tmp_path / "mix.snap")
    except SnapshotError:
        assert data not in files, "an intact snapshot was refused"
        return "refused"
    assert data in files, "a file mixing two saves loaded"
    assert read_all(loaded, keys) == want[files.index(data)]
    return "loaded"


def test_splice_at_every_section_boundary(tmp_path: Path) -> None:
    a, b, want, keys = _two_saves(tmp_path)
    cuts = section_bounds(a)
    assert cuts == section_bounds(b)
    refused = 0
    for x in cuts:
        for y in cuts:
            if x < y:
                for outer, inner in ((a, b), (b, a)):
                    mutant = outer[:x] + inner[x:y] + outer[y:]
                    refused += _mixed_load(tmp_path, mutant, (a, b), want, keys) == "refused"
    assert refused >= len(cuts) * (len(cuts) - 1) - 4


@settings(
    max_examples=by_profile(default=100, ci=300), deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.one_of(st.integers(0, 10**6), st.integers(-20, -1)), min_size=1, max_size=6),
    start=st.booleans(),
)
def test_splice_at_random_cuts(tmp_path: Path, cuts: list[int], start: bool) -> None:
    """Cuts anywhere, or (a negative cut) at a section boundary."""
    a, b, want, keys = _two_saves(tmp_path)
    bounds = section_bounds(a)
    points = sorted({c % (len(a) + 1) if c >= 0 else bounds[c % len(bounds)] for c in cuts})
    files = (a, b) if start else (b, a)
    out, which = bytearray(files[0]), 1
    for x, y in zip(points, [*points[1:], len(a)]):
        out[x:y] = files[which][x:y]
        which ^= 1
    _mixed_load(tmp_path, bytes(out), (a, b), want, keys)


def test_sections_of_two_saves_with_the_same_vectors_do_not_mix(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(10, None, 1, dim=4)
    c.put(key(1), vec(1))
    c.save(tmp_path / "a.snap")
    c.save(tmp_path / "b.snap")
    a, b = (tmp_path / "a.snap").read_bytes(), (tmp_path / "b.snap").read_bytes()
    assert a != b  # another file id, save time, checksums
    eo = Parsed(a).h["entries_offset"]
    for cut, message in [(HEADER, "belongs to another save|checksum"), (eo, "another save")]:
        (tmp_path / "m.snap").write_bytes(a[:cut] + b[cut:])
        with pytest.raises(SnapshotError, match=message):
            SyncEmbeddingCache.load(tmp_path / "m.snap")


def test_version_1_files_still_load() -> None:
    """tests/data/snapshot_v1.snap was written by the version-1 save: 8 entries
    "v1-0".."v1-7", dims 3 and 5 alternating, v1-0 read last."""
    loaded = SyncEmbeddingCache.load(DATA / "snapshot_v1.snap")
    loaded._check_invariants()
    assert len(loaded) == 8 and loaded.get_cache_info().dims == (3, 5)
    for i in range(8):
        got = loaded.get(CacheKey(f"v1-{i}", "m"))
        assert got is not None
        assert np.array_equal(got, np.arange((3, 5)[i % 2], dtype=np.float32) + i * 1000.0)


def test_a_corrupt_version_1_file_is_refused(tmp_path: Path) -> None:
    data = (DATA / "snapshot_v1.snap").read_bytes()
    for at in (40, 130, len(data) - 100, len(data) - 20):
        mutant = bytearray(data)
        mutant[at] ^= 4
        (tmp_path / "v1.snap").write_bytes(bytes(mutant))
        with pytest.raises(SnapshotError):
            SyncEmbeddingCache.load(tmp_path / "v1.snap")


# --- where a save writes ------------------------------------------------------------------


def test_save_with_a_255_byte_name(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(10, None, 1)
    c.put(key(1), vec(1))
    for name in ["n" * 255, "é" * 127 + "x", "a" * 235]:
        assert len(name.encode()) in (255, 235)
        assert c.save(tmp_path / name) == 1
        assert len(SyncEmbeddingCache.load(tmp_path / name)) == 1
        assert c.save(os.fsencode(tmp_path / name)) == 1
    assert sorted(os.listdir(tmp_path)) == sorted(["n" * 255, "é" * 127 + "x", "a" * 235])


def test_periodic_save_with_a_255_byte_name(tmp_path: Path) -> None:
    path = tmp_path / ("p" * 255)

    async def main() -> None:
        async with EmbeddingCache.open(path, save_every=0.02) as cache:
            await cache.put(key(1), vec(1))
            for _ in range(300):
                await asyncio.sleep(0.01)
                if path.exists():
                    break
            assert path.exists(), "no periodic save"

    asyncio.run(main())
    assert os.listdir(tmp_path) == ["p" * 255]


def test_save_over_a_symlink_replaces_its_target(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(10, None, 1)
    c.put(key(1), vec(1))
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "cache.snap"
    target.write_bytes(b"old")
    link = tmp_path / "link.snap"
    link.symlink_to(target)
    assert c.save(link) == 1
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(SyncEmbeddingCache.load(target)) == 1
    assert sorted(os.listdir(tmp_path)) == ["link.snap", "real"]  # no temporary file left
    assert os.listdir(tmp_path / "real") == ["cache.snap"]
    # a link to a file that does not exist yet: the file is made, the link kept
    dangling = tmp_path / "later.snap"
    dangling.symlink_to(tmp_path / "real" / "new.snap")
    assert c.save(dangling) == 1 and dangling.is_symlink()
    assert len(SyncEmbeddingCache.load(tmp_path / "real" / "new.snap")) == 1
    # a loop of links is refused, the links left as they were
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    with pytest.raises(OSError, match="symbolic links"):
        c.save(tmp_path / "loop1")
    assert (tmp_path / "loop1").is_symlink() and (tmp_path / "loop2").is_symlink()


def test_save_into_a_folder_that_is_a_file(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(10, None, 1)
    c.put(key(1), vec(1))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(SnapshotFolderError, match="does not exist") as info:
        c.save(tmp_path / "file" / "x.snap")
    assert isinstance(info.value, OSError) and isinstance(info.value, EmbcacheError)
    assert info.value.errno == errno.ENOTDIR and info.value.filename == str(tmp_path / "file")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        c.save(tmp_path / "missing" / "x.snap")
    assert sorted(os.listdir(tmp_path)) == ["file"]


@pytest.mark.parametrize("dims", [(4,), (4, 5)])
def test_tinylfu_load_starts_as_fresh_puts_in_saved_order(tmp_path: Path, dims: tuple) -> None:
    # a load under W-TinyLFU starts with an empty sketch and segments built as puts
    # in the saved order build them, however many dims (groups) the file holds
    keys = [CacheKey(f"k{i}", "m") for i in range(500)]
    saved = SyncEmbeddingCache(500, None, 1)
    fresh = SyncEmbeddingCache(500, None, 1, policy="tinylfu")
    for i, k in enumerate(keys):
        v = np.arange(dims[i % len(dims)], dtype=np.float32) + i
        saved.put(k, v)
        fresh.put(k, v)
    saved.save(tmp_path / "t.snap")
    loaded = SyncEmbeddingCache.load(tmp_path / "t.snap", policy="tinylfu")
    loaded._check_invariants()
    for c in (loaded, fresh):
        for j in range(200):
            new = CacheKey(f"new{j}", "m")
            assert c.get(new) is None
            c.put(new, np.zeros(4, np.float32))
    assert (
        loaded.get_cache_info().admission_rejections == fresh.get_cache_info().admission_rejections
    )
    assert {k for k in keys if k in loaded} == {k for k in keys if k in fresh}
