"""Snapshots: SyncEmbeddingCache.save / load beside what a plain Python cache
would write, a pickled ``dict`` of key -> array, and ``np.savez`` of the same
vectors.

params ``impl`` x ``entries`` (dim 768):

* ``impl``: "embcache" (``cache.save(path)`` / ``SyncEmbeddingCache.load(path)``),
  "pickle" (``pickle.dump`` protocol 5 of ``{key: row}`` / ``pickle.load``) or
  "npz" (``np.savez(f, vectors=matrix)`` / ``np.load(path)["vectors"]``). Every
  save is fsynced (embcache's save syncs the file and its folder), so each side
  pays for durability alike; loads read whatever the page cache holds.
* ``entries``: 10,000 (29 MiB of vectors) and 1,000,000 (2.9 GiB). The large
  size needs about 4x its vector bytes of free memory and 2x of free disk beside
  the temporary folder; without them it is skipped (NotImplementedError), and
  so is any size above ``EMBCACHE_BENCH_MAX_ENTRIES`` when that is set (CI's
  smoke run sets it, to keep its one pass over every benchmark short).
  Each side holds one copy of the vectors: the cache, the dict or the matrix.

Timing: one call per sample, seconds per whole save or load. What is saved is
built once per process (memo); a load benchmark writes its file once in setup,
dropping what it wrote from. Files live in a temporary folder removed at exit.
"""

from __future__ import annotations

import atexit
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from embcache import SyncEmbeddingCache

from ._util import memo, sha_key

DIM = 768
IMPLS = ["embcache", "pickle", "npz"]
SIZES = [10_000, 1_000_000]
ROW = DIM * 4


def _folder() -> str:
    def build() -> str:
        path = tempfile.mkdtemp(prefix="embcache-bench-snapshot-")
        atexit.register(shutil.rmtree, path, True)
        return path

    return memo(("snapshot-folder",), build)  # type: ignore[no-any-return]


def _require_room(entries: int) -> None:
    """Skip a size this machine cannot hold in memory or on disk, or that is above
    EMBCACHE_BENCH_MAX_ENTRIES."""
    cap = os.environ.get("EMBCACHE_BENCH_MAX_ENTRIES")
    if cap and entries > int(cap):
        raise NotImplementedError(f"{entries:,} entries: above EMBCACHE_BENCH_MAX_ENTRIES={cap}")
    need = entries * ROW
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable"))
    except (OSError, StopIteration):
        avail = None
    if avail is not None and avail < 3 * need:
        raise NotImplementedError(f"needs {3 * need / 2**30:.1f} GiB of free memory")
    if shutil.disk_usage(tempfile.gettempdir()).free < 2 * need:
        raise NotImplementedError(f"needs {2 * need / 2**30:.1f} GiB of free disk")


def _chunks(entries: int) -> Iterator[tuple[int, list[Any], np.ndarray]]:
    """(first index, keys, rows) of the workload, 4,096 distinct dim-768 rows at a time."""
    base = np.random.default_rng(20240528).standard_normal((4096, DIM)).astype(np.float32)
    for start in range(0, entries, len(base)):
        stop = min(start + len(base), entries)
        keys = [sha_key(i) for i in range(start, stop)]
        yield start, keys, base[: stop - start] + np.float32(start)


def _build(impl: str, entries: int) -> Any:
    """Only what `impl` saves (one copy of the vectors): a full SyncEmbeddingCache,
    a dict of key -> row, or the (entries, 768) matrix."""
    if impl == "embcache":
        cache = SyncEmbeddingCache(entries, None, entries * (ROW + 256) / 2**20 + 1, dim=DIM)
        for _, keys, rows in _chunks(entries):
            cache.put_many(keys, rows)
        return cache
    if impl == "pickle":
        return {k: row.copy() for _, keys, rows in _chunks(entries) for k, row in zip(keys, rows)}
    matrix = np.empty((entries, DIM), np.float32)
    for start, keys, rows in _chunks(entries):
        matrix[start : start + len(keys)] = rows
    return matrix


def _path(impl: str, entries: int) -> str:
    return os.path.join(_folder(), f"{impl}-{entries}.{impl}")


def _save(impl: str, entries: int, data: Any) -> None:
    path = _path(impl, entries)
    if impl == "embcache":
        data.save(path)
        return
    with open(path, "wb") as f:
        if impl == "pickle":
            pickle.dump(data, f, protocol=5)
        else:
            np.savez(f, vectors=data)
        f.flush()
        os.fsync(f.fileno())


def _load(impl: str, entries: int) -> object:
    path = _path(impl, entries)
    if impl == "embcache":
        return SyncEmbeddingCache.load(path)
    if impl == "pickle":
        with open(path, "rb") as f:
            return pickle.load(f)
    with np.load(path) as z:
        return z["vectors"]


class Save:
    """Seconds to write a snapshot of the whole cache (fsynced)."""

    params = (IMPLS, SIZES)
    param_names = ["impl", "entries"]
    number = 1
    repeat = (1, 5, 20.0)
    warmup_time = 0
    timeout = 900

    def setup(self, impl: str, entries: int) -> None:
        _require_room(entries)
        self.data = memo(("snapshot-data", impl, entries), lambda: _build(impl, entries))

    def time_save(self, impl: str, entries: int) -> None:
        _save(impl, entries, self.data)


class Load:
    """Seconds to read a snapshot back into a usable cache (embcache: a new
    SyncEmbeddingCache, verified; pickle: the dict; npz: the matrix)."""

    params = (IMPLS, SIZES)
    param_names = ["impl", "entries"]
    number = 1
    repeat = (1, 5, 20.0)
    warmup_time = 0
    timeout = 900

    def setup(self, impl: str, entries: int) -> None:
        _require_room(entries)
        if not os.path.exists(_path(impl, entries)):
            _save(impl, entries, _build(impl, entries))  # built, written, dropped
        self.loaded: object = None

    def time_load(self, impl: str, entries: int) -> None:
        self.loaded = _load(impl, entries)

    def teardown(self, impl: str, entries: int) -> None:
        self.loaded = None
