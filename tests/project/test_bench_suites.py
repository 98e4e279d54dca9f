"""The asv suites time the default cache (``dim`` not given) beside the fixed-dim
one, and the regression gate (tools/gate_bench.py) selects the benchmarks it
must gate, named as asv names them. One call of each, in process."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import itertools
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (REPO / "benchmarks" / "bench_peers.py").is_file()
    or not (REPO / "tools" / "gate_bench.py").is_file(),
    reason="the asv suites and tools/ are not beside the tests",
)


@pytest.fixture
def suites(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(REPO))
    util = importlib.import_module("benchmarks._util")
    monkeypatch.setattr(util, "_MEMO", {})  # filled caches kept for this test only
    return importlib


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch, suites: Any) -> list[Any]:
    """The ``dim`` argument of every SyncEmbeddingCache the suites make."""
    from embcache import SyncEmbeddingCache

    dims: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        dims.append(kwargs.get("dim"))
        return SyncEmbeddingCache(*args, **kwargs)

    for name in ("bench_peers", "bench_basic", "bench_batch"):
        monkeypatch.setattr(suites.import_module(f"benchmarks.{name}"), "SyncEmbeddingCache", spy)
    return dims


def test_bench_peers_default_cache_every_figure(suites: Any, made: list[Any]) -> None:
    bench_peers = suites.import_module("benchmarks.bench_peers")
    assert bench_peers.CONTENDERS[:4] == ["embcache", "cachebox", "lru-dict", "cachetools"]
    for cls, method in [
        (bench_peers.PutNew, "time_put_new"),
        (bench_peers.PutFresh, "time_put_fresh"),
        (bench_peers.GetHit, "time_get_hit"),
        (bench_peers.GetMiss, "time_get_miss"),
        (bench_peers.PutFull, "time_put_full"),
    ]:
        for peer in ("embcache-default", "embcache"):
            made.clear()
            bench = cls()
            bench.setup(peer)
            getattr(bench, method)(peer)
            assert made == ([None] if peer == "embcache-default" else [768]), (cls, peer)
            assert len(bench.cache) > 0


def test_put_fresh_times_a_brand_new_cache_each_call(suites: Any) -> None:
    bench_peers = suites.import_module("benchmarks.bench_peers")
    bench = bench_peers.PutFresh()
    caches = []
    for _ in range(3):
        bench.setup("embcache-default")
        assert len(bench.cache) == 0
        caches.append(bench.cache)
        bench.time_put_fresh("embcache-default")
        assert len(bench.cache) == bench_peers.OPS
    assert len({id(c) for c in caches}) == 3  # a new cache each call


def test_basic_and_batch_default_cache(suites: Any, made: list[Any]) -> None:
    bench_basic = suites.import_module("benchmarks.bench_basic")
    bench_batch = suites.import_module("benchmarks.bench_batch")
    for cls, method, param in [
        (bench_basic.DefaultCachePut, "time_put", 768),
        (bench_basic.DefaultCacheGet, "time_get", "hit"),
    ]:
        made.clear()
        bench = cls()
        bench.setup(param)
        getattr(bench, method)(param)
        assert made == [None]
    made.clear()
    bench = bench_batch.GetMany()
    bench.setup("embcache-default", 10, 384)
    bench.time_get_many("embcache-default", 10, 384)
    assert made == [None]
    assert bench_batch.IMPLS[:5] == [
        "embcache",
        "embcache-out",
        "cachebox",
        "lru-dict",
        "cachetools",
    ]


def _gate(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("gate_bench", REPO / "tools" / "gate_bench.py")
    assert spec is not None and spec.loader is not None
    gate = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gate_bench", gate)
    spec.loader.exec_module(gate)
    return gate


def test_gate_without_a_build_is_an_error_not_a_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the source tree of embcache without its compiled core: the workers refuse to
    # time anything but that build (an installed embcache must not stand in for it)
    (tmp_path / "embcache").mkdir()
    (tmp_path / "embcache" / "__init__.py").write_text("")
    gate = _gate(monkeypatch)
    assert gate.main(["--base", str(tmp_path), "--head", str(tmp_path)]) == 2
    assert "cannot list the benchmarks" in capsys.readouterr().err


def test_gate_selects_the_gated_benchmarks_by_their_asv_names(
    suites: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _gate(monkeypatch)
    names = list(gate._benchmarks(gate.MODULES))
    gated = [n for n in names if re.search(gate.DEFAULT_BENCH, n)]
    for required in [
        "bench_basic.CacheGet.time_get('hit')",
        "bench_basic.CacheGet.time_get('miss')",
        "bench_basic.DefaultCacheGet.time_get('hit')",
        "bench_basic.CachePut.time_put(768)",
        "bench_basic.DefaultCachePut.time_put(768)",
        "bench_core.EvictionChurn.time_put_evicting('entries')",
        "bench_core.EvictionChurn.time_put_evicting('memory')",
        "bench_core.AwaitOverhead.time_get_hit('async')",
        "bench_core.KeyCreation.time_create('fields')",
        "bench_peers.PutFresh.time_put_fresh('embcache-default')",
        "bench_peers.GetHit.time_get_hit('embcache')",
    ]:
        assert required in gated
    assert not [n for n in gated if "cachebox" in n or "Concurrent" in n or "Scaling" in n]
    # a planted slowdown multiplies what the timed call costs, through the same timing:
    # on a clock where every timed call lasts one tick exactly (wall-clock samples of a
    # sub-millisecond call vary too much on a loaded machine to assert a ratio)
    ticks = itertools.count()
    monkeypatch.setattr(gate, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    table = gate._benchmarks(("bench_basic",))
    name = "bench_basic.CacheGet.time_get('hit')"
    assert gate._run(table, {}, {"name": name, "samples": 5}) == [1.0] * 5
    assert gate._run(table, {}, {"name": name, "samples": 5, "plant": 3.0}) == [3.0] * 5


def test_goal_table_prints_a_pasteable_table_marking_misses(
    suites: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from embcache.cli import compare

    goal_table = suites.import_module("tools.goal_table")
    if not goal_table.available_peers():
        pytest.skip("no peer cache installed")
    # every goal impossible but get miss, which every run meets
    goals = {
        k: dataclasses.replace(g, goal=1e9 if k == "get_miss" else 0.0)
        for k, g in compare.GOALS.items()
    }
    monkeypatch.setattr(goal_table, "GOALS", goals)
    assert goal_table.main(["--runs", "2", "--repeats", "1", "--ops", "300", "--dim", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| figure (ratio embcache / best peer) | goal | dim=None (default)")
    assert "dim=16, 2 runs" in lines[0] and lines[1] == "| --- | ---: | ---: | ---: |"
    rows = {line.split(" | ")[0][2:]: line for line in lines[2:7]}
    assert set(rows) == set(goal_table.TITLES.values())
    for title, row in rows.items():
        cells = row.strip("|").split(" | ")
        assert len(cells) == 4
        if title == "get miss":
            assert "missed" not in row and re.fullmatch(r"\d\.\d\d-\d\.\d\d", cells[2].strip())
        else:
            assert cells[2].strip().endswith("missed**") and cells[3].strip().endswith("missed**")
    assert lines[8].startswith(
        "`python -m tools.goal_table --runs 2 --repeats 1 --ops 300 --dim 16`"
    )


def test_get_hit_split_prints_each_contenders_two_loops_and_their_difference(
    suites: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    split = suites.import_module("tools.get_hit_split")
    assert split.main(["--rounds", "1", "--ops", "300", "--dim", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ns per get (best of 1 interleaved rounds; 300 keys, dim 16)")
    rows = [line for line in lines[2:] if not line.startswith("numpy.take")]
    names = [row.split("  ")[0].strip() for row in rows]
    assert names == ["embcache (default)", *split.available_peers()]
    for row in rows:
        random_keys, hot, waiting = (float(x) for x in row[20:].split()[:3])
        assert random_keys > 0 and hot > 0 and waiting == pytest.approx(random_keys - hot, abs=1)
    floor = r"numpy\.take of the same rows in the same order: \d+ ns per row"
    assert re.fullmatch(floor, lines[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="shared segments: Linux only")
def test_bench_shared_times_both_caches_alike_and_leaves_no_segment(suites: Any) -> None:
    """Each shared-cache benchmark runs on SharedEmbeddingCache and on the
    SyncEmbeddingCache beside it, over the same keys and rows; teardown removes the
    segment's name; a storage the segment does not take is skipped for both."""
    bench_shared = suites.import_module("benchmarks.bench_shared")
    assert bench_shared.CACHES == ["sync", "shared"]
    assert bench_shared.STORAGES[:4] == ["float32", "float16", "bfloat16", "int8"]
    mine = f"embcache-bench-{os.getpid()}-"
    for cls, method in [
        (bench_shared.SharedGetHit, "time_get_hit"),
        (bench_shared.SharedGetMany, "time_get_many"),
        (bench_shared.SharedPut, "time_put"),
    ]:
        for cache in bench_shared.CACHES:
            bench = cls()
            bench.setup("float32", cache)
            getattr(bench, method)("float32", cache)
            assert len(bench.cache) == bench_shared.ENTRIES + (cls is bench_shared.SharedPut) * 1000
            bench.teardown("float32", cache)
            assert not [n for n in os.listdir("/dev/shm") if n.startswith(mine)], cls
    sync, keys = bench_shared.filled("sync", "float32")
    shared, same_keys = bench_shared.filled("shared", "float32")
    assert type(shared).__name__ == "SharedEmbeddingCache" and shared.dim == sync.dim == 768
    assert same_keys == keys
    matrix, found = shared.get_many(keys)
    assert found.all() and matrix.tobytes() == sync.get_many(keys)[0].tobytes()
    with pytest.raises(NotImplementedError, match="does not take storage='no-such-rows'"):
        bench_shared.require_storage("no-such-rows")
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(mine)]
