"""Snapshots: SyncEmbeddingCache.save / load, EmbeddingCache.save / load /
open, the file format, atomic writes, verified loads and a mutation fuzz of the
loader."""

from __future__ import annotations

import asyncio
import os
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FakeClock, entry_bytes, key, run_python, vec
from snapshot_format import HEADER, RECORD, TRAILER, Parsed, fill, read_all, save_sample

import embcache
from embcache import (
    ArgumentTypeError,
    CacheKey,
    EmbeddingCache,
    SnapshotError,
    SyncEmbeddingCache,
)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, SyncEmbeddingCache, list[CacheKey]]:
    """A snapshot of 30 entries of dims 3 and 5 (no TTL)."""
    return save_sample(tmp_path)


# --- helpers ---------------------------------------------------------------------------


def lru_order(cache: SyncEmbeddingCache, keys: list[CacheKey], dim: int) -> list[CacheKey]:
    """The keys of `cache` from least to most recent, found by evicting: each put
    of a fresh key into a full copy evicts the least recent entry."""
    n = len(cache)
    order = []
    for i in range(n):
        before = {k for k in keys if k in cache}
        cache.put(CacheKey(f"filler-{i}", "filler"), np.ones(dim, np.float32))
        gone = [k for k in before if k not in cache]
        assert len(gone) == 1, gone
        order.append(gone[0])
    return order


# --- round trips -----------------------------------------------------------------------


def test_round_trip_fixed_dim(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(50, None, 2.0, dim=8)
    keys = fill(c, 40, dims=(8,))
    c.get(keys[3])
    path = tmp_path / "a.snap"
    assert c.save(path) == 40
    loaded = SyncEmbeddingCache.load(path)
    loaded._check_invariants()
    assert (loaded.max_entries, loaded.ttl_seconds, loaded.max_memory_mb, loaded.dim) == (
        50,
        None,
        2.0,
        8,
    )
    info = loaded.get_cache_info()
    assert (info.hits, info.misses, info.puts, info.evictions) == (0, 0, 0, 0)
    assert info.memory_usage_bytes == 40 * entry_bytes(8)
    assert read_all(loaded, keys) == read_all(c, keys)


def test_stats_start_fresh(saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]]) -> None:
    path, _, _ = saved
    info = SyncEmbeddingCache.load(path).get_cache_info()
    assert (
        info.hits,
        info.misses,
        info.puts,
        info.overwrites,
        info.removals,
        info.evictions,
        info.expirations,
    ) == (0, 0, 0, 0, 0, 0, 0)
    assert info.size == 30


def test_multi_dim_round_trip(saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]]) -> None:
    path, c, keys = saved
    loaded = SyncEmbeddingCache.load(path)
    loaded._check_invariants()
    assert loaded.dim is None
    assert loaded.get_cache_info().dims == (3, 5)
    assert read_all(loaded, keys) == read_all(c, keys)


def test_empty_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "empty.snap"
    assert SyncEmbeddingCache(7, 60, 1, dim=3).save(path) == 0
    loaded = SyncEmbeddingCache.load(path)
    assert len(loaded) == 0
    assert (loaded.max_entries, loaded.ttl_seconds, loaded.dim) == (7, 60, 3)
    loaded._check_invariants()


def test_recency_order_is_kept(tmp_path: Path) -> None:
    for dims in ((4,), (2, 3, 4)):
        c = SyncEmbeddingCache(20, None, 1)
        keys = fill(c, 20, dims=dims)
        for i in (5, 0, 17, 3):
            c.get(keys[i])
        c.put(keys[9], vec(99, dims[9 % len(dims)]))
        path = tmp_path / "r.snap"
        c.save(path)
        loaded = SyncEmbeddingCache.load(path)
        assert lru_order(loaded, keys, 2) == lru_order(c, keys, 2)


def test_smaller_limits_keep_most_recent(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(100, None, 4, dim=16)
    keys = fill(c, 50, dims=(16,))
    c.get(keys[0])  # recency: 1, 2, ..., 49, 0 (most recent)
    path = tmp_path / "s.snap"
    c.save(path)
    small = SyncEmbeddingCache.load(path, max_entries=10)
    assert {k for k in keys if k in small} == set(keys[41:]) | {keys[0]}
    budget = 7 * entry_bytes(16) + 10
    tight = SyncEmbeddingCache.load(path, max_memory_mb=budget / 2**20)
    assert {k for k in keys if k in tight} == set(keys[44:]) | {keys[0]}
    assert tight.get_cache_info().memory_usage_bytes == 7 * entry_bytes(16)
    small._check_invariants()
    tight._check_invariants()


def test_limits_given_replace_recorded(
    saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]],
) -> None:
    path, _, _ = saved
    loaded = SyncEmbeddingCache.load(path, max_entries=500, ttl_seconds=30, max_memory_mb=9)
    assert (loaded.max_entries, loaded.ttl_seconds, loaded.max_memory_mb) == (500, 30, 9)
    assert len(loaded) == 30


def test_ttl_is_kept_as_remaining_time(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    c = SyncEmbeddingCache(10, 300, 1, clock=clock)
    a, b, z = key("a"), key("b"), key("z")
    c.put(a, vec(1))  # expires at 1300
    clock.advance(200)
    c.put(b, vec(2))  # expires at 1500
    c.put(z, vec(3))
    clock.advance(50)  # a: 50 s left, b and z: 250 s
    path = tmp_path / "t.snap"
    assert c.save(path) == 3
    later = FakeClock(5.0)
    loaded = SyncEmbeddingCache.load(path, clock=later)
    loaded._check_invariants()
    assert loaded.ttl_seconds == 300
    later.advance(45)
    assert a in loaded and b in loaded
    later.advance(10)  # 55 s after the load: a has expired
    assert a not in loaded and b in loaded
    later.advance(190)  # 245 s
    assert b in loaded and z in loaded
    later.advance(10)
    assert len(loaded) == 0
    # a shorter TTL given at load cuts the remaining time; None keeps entries forever
    cut = SyncEmbeddingCache.load(path, clock=FakeClock(0.0), ttl_seconds=20)
    assert cut.ttl_seconds == 20
    forever = SyncEmbeddingCache.load(path, ttl_seconds=None)
    assert forever.ttl_seconds is None and len(forever) == 3


def test_entries_expired_on_disk_are_dropped(tmp_path: Path) -> None:
    clock = FakeClock(0.0)
    c = SyncEmbeddingCache(10, 10, 1, clock=clock)
    c.put(key("old"), vec(1))
    clock.advance(9.95)  # 0.05 s left
    c.put(key("new"), vec(2))
    path = tmp_path / "e.snap"
    c.save(path)
    time.sleep(0.1)
    loaded = SyncEmbeddingCache.load(path, clock=FakeClock(0.0))
    assert key("old") not in loaded and key("new") in loaded
    assert len(loaded) == 1
    loaded._check_invariants()


def test_no_ttl_snapshot_loaded_with_ttl_gets_fresh_ttl(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(10, None, 1)
    c.put(key(1), vec(1))
    path = tmp_path / "n.snap"
    c.save(path)
    clock = FakeClock(100.0)
    loaded = SyncEmbeddingCache.load(path, ttl_seconds=5, clock=clock)
    clock.advance(4.9)
    assert key(1) in loaded
    clock.advance(0.2)
    assert key(1) not in loaded


def test_dim_none_given_loads_fixed_dim_snapshot_as_any_dim(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(10, None, 1, dim=4)
    fill(c, 3)
    path = tmp_path / "d.snap"
    c.save(path)
    loaded = SyncEmbeddingCache.load(path, dim=None)
    assert loaded.dim is None and len(loaded) == 3
    loaded.put(key("seven"), vec(7, 7))


def test_save_overwrites_previous_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "o.snap"
    c = SyncEmbeddingCache(10, None, 1)
    c.put(key(1), vec(1))
    c.save(path)
    c.put(key(2), vec(2))
    assert c.save(str(path)) == 2
    assert len(SyncEmbeddingCache.load(str(path).encode())) == 2
    assert sorted(os.listdir(tmp_path)) == ["o.snap"]


def test_loaded_cache_works_like_a_new_one(
    saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]],
) -> None:
    path, _, keys = saved
    loaded = SyncEmbeddingCache.load(path, max_entries=30)
    loaded.put(key("new"), vec(1, 3))  # evicts the least recent: keys[1]
    assert keys[1] not in loaded and keys[0] in loaded
    assert loaded.remove(keys[2])
    loaded.put_many([key("x"), key("y")], np.ones((2, 5)))
    loaded.clear()
    loaded._check_invariants()
    assert len(loaded) == 0


# --- key identity across processes -------------------------------------------------------

CHILD_SAVE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from embcache import CacheKey, SyncEmbeddingCache
    from embcache._core import hash_key
    c = SyncEmbeddingCache(1000, 3600, 8, dim=16)
    for i in range(200):
        c.put(CacheKey(f"content-{i}", "model-v2", None if i % 2 else f"c{i}"),
              np.full(16, i, np.float32))
    assert c.save(sys.argv[1]) == 200
    print(hash_key().hex())
    """
)


def test_snapshot_from_another_process_hits(tmp_path: Path) -> None:
    made_before = [
        CacheKey(f"content-{i}", "model-v2", None if i % 2 else f"c{i}") for i in range(0, 200, 2)
    ]
    path = tmp_path / "other.snap"
    proc = run_python(["-c", CHILD_SAVE, str(path)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert bytes.fromhex(proc.stdout.strip()) != embcache._core.hash_key()
    loaded = SyncEmbeddingCache.load(path)
    made_after = [
        CacheKey(f"content-{i}", "model-v2", None if i % 2 else f"c{i}") for i in range(1, 200, 2)
    ]
    for k in made_before + made_after:
        i = int(k.content_hash.split("-")[1])
        got = loaded.get(k)
        assert got is not None and np.array_equal(got, np.full(16, i, np.float32)), k
    matrix, found = loaded.get_many(made_after)
    assert found.all()
    assert loaded.get(CacheKey("content-1", "model-v2", "c1")) is None  # chunk differs
    info = loaded.get_cache_info()
    assert (info.hits, info.misses) == (300, 1)
    # the index is as good as a fresh cache's: keys sit in (or next to) their home cell
    mean, longest = loaded._probe_lengths()
    assert mean < 2.0 and longest < 40


def test_file_holds_digests_not_the_process_key(
    saved: tuple[Path, SyncEmbeddingCache, list[CacheKey]],
) -> None:
    path, _, keys = saved
    data = path.read_bytes()
    assert embcache._core.hash_key() not in data
    p = Parsed(data)
    digests = {p.entries[i * RECORD : i * RECORD + 32] for i in range(30)}
    assert digests == {k.digest for k in keys}


# --- atomic writes ---------------------------------------------------------------------

CHILD_FULL_DISK = textwrap.dedent(
    """
    import errno, os, resource, signal, sys
    import numpy as np
    from embcache import CacheKey, SyncEmbeddingCache
    path, limit = sys.argv[1], int(sys.argv[2])
    c = SyncEmbeddingCache(20_000, None, 64, dim=256)
    keys = [CacheKey(f"k{i}", "m") for i in range(12_000)]
    c.put_many(keys, np.ones((12_000, 256), np.float32))
    # the disk is "full" past `limit` bytes: writes beyond it fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        c.save(path)
    except OSError as exc:
        print("errno", exc.errno == errno.EFBIG)
    else:
        print("saved")
    """
)
FULL_DISK_FILE_BYTES = HEADER + 12_000 * (256 * 4 + RECORD) + TRAILER + 32 + TRAILER


# the disk fills in the first 4 MiB buffer, in the third, and in the last bytes (the
# entries and groups, written after every vector): each failure reaches save()
@pytest.mark.parametrize("limit", [1 << 20, 9 << 20, FULL_DISK_FILE_BYTES - 20])
def test_full_disk_keeps_previous_snapshot_and_leaves_no_temp(tmp_path: Path, limit: int) -> None:
    path = tmp_path / "keep.snap"
    c = SyncEmbeddingCache(10, None, 1)
    c.put(key(1), vec(1))
    c.save(path)
    before = path.read_bytes()
    proc = run_python(["-c", CHILD_FULL_DISK, str(path), str(limit)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["errno", "True"]
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.snap"]
    assert len(SyncEmbeddingCache.load(path)) == 1


def test_full_disk_limit_of_the_test_is_the_file_size(tmp_path: Path) -> None:
    # the full-disk cases above are placed by this size; a format change must move them
    c = SyncEmbeddingCache(20_000, None, 64, dim=256)
    keys = [CacheKey(f"k{i}", "m") for i in range(12_000)]
    c.put_many(keys, np.ones((12_000, 256), np.float32))
    assert c.save(tmp_path / "x.snap") == 12_000
    assert (tmp_path / "x.snap").stat().st_size == FULL_DISK_FILE_BYTES


def test_save_leaves_no_temp_on_success_or_bad_folder(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(10, None, 1)
    c.put(key(1), vec(1))
    c.save(tmp_path / "x.snap")
    assert os.listdir(tmp_path) == ["x.snap"]
    with pytest.raises(FileNotFoundError):
        c.save(tmp_path / "missing" / "x.snap")
    with pytest.raises(IsADirectoryError):
        c.save(tmp_path)
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:
        if os.geteuid() != 0:
            with pytest.raises(PermissionError):
                c.save(tmp_path / "ro" / "x.snap")
    finally:
        os.chmod(tmp_path / "ro", 0o700)
    assert sorted(os.listdir(tmp_path)) == ["ro", "x.snap"]


@pytest.mark.parametrize("bad", [None, 3, 1.5, ["a"], object()])
def test_save_and_load_reject_bad_path_types(bad: Any) -> None:
    c = SyncEmbeddingCache(10, None, 1)
    with pytest.raises(ArgumentTypeError):
        c.save(bad)
    with pytest.raises(ArgumentTypeError):
        SyncEmbeddingCache.load(bad)


def test_empty_path_is_rejected() -> None:
    with pytest.raises(ValueError):
        SyncEmbeddingCache(10, None, 1).save("")
    with pytest.raises(ValueError):
        SyncEmbeddingCache.load("")


def test_save_during_concurrent_writes(tmp_path: Path) -> None:
    c = SyncEmbeddingCache(4000, None, 64, dim=512)
    keys = [key(i) for i in range(3000)]
    values: dict[CacheKey, set[bytes]] = {k: set() for k in keys}
    for i, k in enumerate(keys):
        v = vec(i, 512)
        values[k].add(v.tobytes())
        c.put(k, v)
    stop = threading.Event()
    lock = threading.Lock()

    def writer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            i = int(rng.integers(3000))
            if rng.random() < 0.3:
                c.remove(keys[i])
            else:
                v = vec(i + 0.5 * int(rng.integers(1, 5)), 512)
                with lock:
                    values[keys[i]].add(v.tobytes())
                c.put(keys[i], v)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            c.save(tmp_path / "busy.snap")
            loaded = SyncEmbeddingCache.load(tmp_path / "busy.snap")
            loaded._check_invariants()
            with lock:
                for k, b in read_all(loaded, keys).items():
                    assert b in values[k]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert os.listdir(tmp_path) == ["busy.snap"]


# --- the asyncio facade --------------------------------------------------------------------


def test_async_save_does_not_block_the_loop(tmp_path: Path) -> None:
    async def main() -> None:
        cache = EmbeddingCache(20_000, None, 256, dim=768)
        keys = [key(i) for i in range(20_000)]
        await cache.put_many(keys, np.ones((20_000, 768), np.float32))
        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.01)
        before = ticks
        gets = 0
        save = asyncio.ensure_future(cache.save(tmp_path / "async.snap"))
        while not save.done():
            assert await cache.get(keys[gets % 100]) is not None
            gets += 1
            await asyncio.sleep(0)
        n = await save
        during = ticks - before
        stop = True
        await task
        assert n == 20_000
        assert during >= 3, "the event loop did not run while saving"
        assert gets >= 3
        loaded = await EmbeddingCache.load(tmp_path / "async.snap", max_entries=30_000)
        assert isinstance(loaded, EmbeddingCache) and len(loaded) == 20_000
        assert loaded.sync.max_entries == 30_000
        last = keys[-1]
        assert (await loaded.get(last)) is not None
        got = await loaded.get_or_compute(
            [last, key("fresh")], lambda ks: np.zeros((len(ks), 768))
        )
        assert got.shape == (2, 768)

    asyncio.run(main())


def test_open_warm_start(tmp_path: Path) -> None:
    path = tmp_path / "warm.snap"

    async def first() -> None:
        async with EmbeddingCache.open(path, max_entries=100, ttl_seconds=3600) as cache:
            assert len(cache) == 0 and cache.sync.max_entries == 100
            await cache.put(key(1), vec(1))
            await cache.put(key(2), vec(2))
        assert path.exists()

    async def second() -> None:
        async with EmbeddingCache.open(path, save_every=0.05) as cache:
            assert cache.sync.max_entries == 100 and cache.sync.ttl_seconds == 3600
            assert np.array_equal(await cache.get(key(1)), vec(1))
            await cache.put(key(3), vec(3))
            mtime = path.stat().st_mtime_ns
            for _ in range(200):
                await asyncio.sleep(0.01)
                if path.stat().st_mtime_ns != mtime:
                    break
            assert len(SyncEmbeddingCache.load(path)) == 3, "no periodic save"
            await cache.put(key(4), vec(4))

    async def third() -> None:
        with pytest.raises(RuntimeError):
            async with EmbeddingCache.open(path, max_entries=2) as cache:
                await cache.put(key(5), vec(5))
                raise RuntimeError("the service crashed")
        loaded = SyncEmbeddingCache.load(path)  # saved on the way out anyway
        assert len(loaded) == 2 and key(5) in loaded

    asyncio.run(first())
    asyncio.run(second())
    assert len(SyncEmbeddingCache.load(path)) == 4
    asyncio.run(third())
    assert sorted(os.listdir(tmp_path)) == ["warm.snap"]


def test_open_rejects_bad_arguments_and_invalid_snapshot(tmp_path: Path) -> None:
    async def enter(**kw: Any) -> None:
        async with EmbeddingCache.open(tmp_path / "o.snap", **kw):
            pass

    for kw, exc in [
        ({"save_every": 0}, ValueError),
        ({"save_every": "1"}, TypeError),
        ({"save_every": float("nan")}, ValueError),
        ({"save_every": True}, TypeError),
        ({"max_entries": -1}, ValueError),
    ]:
        with pytest.raises(exc):
            asyncio.run(enter(**kw))
    assert not (tmp_path / "o.snap").exists()
    (tmp_path / "o.snap").write_bytes(b"garbage" * 50)
    with pytest.raises(SnapshotError):
        asyncio.run(enter())
    assert (tmp_path / "o.snap").read_bytes() == b"garbage" * 50


def test_async_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        asyncio.run(EmbeddingCache.load(tmp_path / "missing"))
    (tmp_path / "bad").write_bytes(b"\0" * 200)
    with pytest.raises(SnapshotError):
        asyncio.run(EmbeddingCache.load(tmp_path / "bad"))


def test_periodic_save_failure_is_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    path = folder / "p.snap"

    async def main() -> None:
        async with EmbeddingCache.open(path, save_every=0.02) as cache:
            await cache.put(key(1), vec(1))
            folder.rmdir()
            await asyncio.sleep(0.1)
            folder.mkdir()
        assert path.exists()

    with caplog.at_level("WARNING", logger="embcache"):
        asyncio.run(main())
    assert any("periodic snapshot" in r.message for r in caplog.records)


def test_load_into_another_policy(tmp_path: Path) -> None:
    src = SyncEmbeddingCache(100, None, 8.0, policy="tinylfu")
    keys = fill(src, 60, dims=(4, 9))
    path = tmp_path / "p.snap"
    assert src.save(path) == 60
    want = read_all(src, keys)
    for policy in ("tinylfu", "lru"):
        got = SyncEmbeddingCache.load(path, policy=policy)
        assert got.policy == policy and got.get_cache_info().policy == policy
        assert read_all(got, keys) == want
        got._check_invariants()
    with pytest.raises(embcache.ArgumentValueError):
        SyncEmbeddingCache.load(path, policy="mru")

    async def facade() -> None:
        cache = await EmbeddingCache.load(path, policy="tinylfu")
        assert cache.sync.policy == "tinylfu" and len(cache) == 60
        async with EmbeddingCache.open(tmp_path / "new.snap", policy="tinylfu") as fresh:
            assert fresh.sync.policy == "tinylfu"

    asyncio.run(facade())


# --- the report's snapshot section -------------------------------------------------------


def _bandwidth_result(dropped: bool, save: float, load: float) -> dict[str, object]:
    return {
        "vector_bytes": 16 << 20, "entries": 5461, "dim": 768, "rounds": 1,
        "page_cache_dropped": dropped, "page_cache_drop_asked": dropped,
        "GiB_per_s": {"dd_write": 1.0, "embcache_save": save, "dd_read": 4.0,
                      "embcache_load": 4.0 * load},
        "save_over_dd": save, "load_over_dd": load,
    }


def test_snapshot_report_judges_reads_against_the_goal_only_from_the_disk() -> None:
    from embcache.cli.snapshot_bandwidth import format_snapshot

    disk = "\n".join(format_snapshot(_bandwidth_result(True, 0.8, 0.5)))
    assert "80% of dd (meets the 60% goal)" in disk
    assert "50% of dd (below the 60% goal)" in disk
    memory = "\n".join(format_snapshot(_bandwidth_result(False, 0.5, 0.2)))
    assert "50% of dd (below the 60% goal)" in memory          # a save always reaches the disk
    assert "20% of dd (reads from memory: the 60% goal is for reads from the disk" in memory
    assert "below the 60% goal)" not in memory.split("read:")[1]
