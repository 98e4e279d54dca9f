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
  the temporary folder; without them it is skipped (NotImplementedError).

Timing: one call per sample, seconds per whole save or load. The cache, the
dict and the matrix are built once per process (memo); load benchmarks write
their file once in setup. Files live in a temporary folder removed at exit.
"""

from __future__ import annotations

import atexit
import os
import pickle
import shutil
import tempfile
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
    """Skip a size this machine cannot hold in memory or on disk."""
    need = entries * ROW
    try:
        with open("/proc/meminfo") as f:
            avail = next(
                int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable")
            )
    except (OSError, StopIteration):
        avail = None
    if avail is not None and avail < 4 * need:
        raise NotImplementedError(f"needs {4 * need / 2**30:.1f} GiB of free memory")
    if shutil.disk_usage(tempfile.gettempdir()).free < 2 * need:
        raise NotImplementedError(f"needs {2 * need / 2**30:.1f} GiB of free disk")


def _data(entries: int) -> tuple[SyncEmbeddingCache, list[Any], np.ndarray]:
    """A full cache of `entries` distinct dim-768 vectors, its keys and matrix."""

    def build() -> tuple[SyncEmbeddingCache, list[Any], np.ndarray]:
        keys = [sha_key(i) for i in range(entries)]
        base = np.random.default_rng(20240528).standard_normal((4096, DIM)).astype(np.float32)
        matrix = np.empty((entries, DIM), np.float32)
        for start in range(0, entries, len(base)):
            stop = min(start + len(base), entries)
            np.add(base[: stop - start], np.float32(start), out=matrix[start:stop])
        cache = SyncEmbeddingCache(entries, None, entries * (ROW + 256) / 2**20 + 1, dim=DIM)
        cache.put_many(keys, matrix)
        return cache, keys, matrix

    return memo(("snapshot-data", entries), build)  # type: ignore[no-any-return]


def _as_dict(entries: int) -> dict[Any, np.ndarray]:
    _, keys, matrix = _data(entries)
    return memo(  # type: ignore[no-any-return]
        ("snapshot-dict", entries), lambda: {k: matrix[i].copy() for i, k in enumerate(keys)}
    )


def _path(impl: str, entries: int) -> str:
    return os.path.join(_folder(), f"{impl}-{entries}.{impl}")


def _save(impl: str, entries: int) -> None:
    path = _path(impl, entries)
    if impl == "embcache":
        _data(entries)[0].save(path)
        return
    with open(path, "wb") as f:
        if impl == "pickle":
            pickle.dump(_as_dict(entries), f, protocol=5)
        else:
            np.savez(f, vectors=_data(entries)[2])
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
        _data(entries)
        if impl == "pickle":
            _as_dict(entries)

    def time_save(self, impl: str, entries: int) -> None:
        _save(impl, entries)


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
        memo(("snapshot-written", impl, entries), lambda: _save(impl, entries) or True)
        self.loaded: object = None

    def time_load(self, impl: str, entries: int) -> None:
        self.loaded = _load(impl, entries)

    def teardown(self, impl: str, entries: int) -> None:
        self.loaded = None
