"""Snapshot bandwidth beside ``dd``'s on the same disk (``embcache check`` and the
figures of docs/performance.md, "Snapshots").

In one folder, in one run, interleaved round by round (best of the rounds):

* ``dd if=/dev/zero of=F bs=1M count=N conv=fsync``: sequential write, synced;
* ``SyncEmbeddingCache.save`` of a cache holding the same number of vector bytes
  (dim 768), which also fsyncs the file and its folder;
* ``dd if=F of=/dev/null bs=1M``: sequential read;
* ``SyncEmbeddingCache.load`` of that snapshot (into a new cache: its fresh pages
  are part of the cost, as they are for a restarted service);
* beside them, what a plain Python cache would write: ``pickle`` (protocol 5) of a
  ``dict`` of key -> array, and ``np.savez`` of the same vectors, both fsynced.

With ``drop=True`` (``embcache check --drop-caches``) the page cache is dropped
before every read (``/proc/sys/vm/drop_caches``: root on Linux, and it affects the
whole machine), so reads come from the disk; the report says whether it was.
Ratios are embcache's GiB/s over dd's. Informational: never part of the exit code.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from embcache import CacheKey, SyncEmbeddingCache
from embcache.cli.report import Progress
from embcache.cli.workloads import DIM, sha_key

__all__ = [
    "GOAL",
    "build_cache",
    "drop_page_cache",
    "format_snapshot",
    "measure_snapshot_bandwidth",
    "run_snapshot_check",
]

MIB = 2**20
GIB = 2**30
GOAL = 0.60
"""Save and load should reach this fraction of dd's bandwidth (docs/performance.md, "Snapshots")."""


def drop_page_cache() -> bool:
    """Write back and drop the OS page cache; False when not permitted here."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def build_cache(nbytes: int, dim: int = DIM) -> tuple[SyncEmbeddingCache, list[CacheKey]]:
    """A cache holding about `nbytes` of float32 vectors of `dim` (distinct rows)."""
    n = max(1, nbytes // (dim * 4))
    cache = SyncEmbeddingCache(n, None, n * (dim * 4 + 256) / MIB + 1, dim=dim)
    keys = [sha_key(i) for i in range(n)]
    base = np.random.default_rng(7).standard_normal((min(n, 4096), dim)).astype(np.float32)
    for start in range(0, n, len(base)):
        stop = min(start + len(base), n)
        cache.put_many(keys[start:stop], base[: stop - start] + np.float32(start))
    return cache, keys


_DD_LINE = re.compile(r"^(\d+) bytes .* copied, ([0-9.]+) s", re.MULTILINE)


def _dd(args: list[str]) -> float | None:
    """Bytes per second dd reports for `args`, or None without a usable dd."""
    dd = shutil.which("dd")
    if dd is None:
        return None
    proc = subprocess.run([dd, *args], capture_output=True, text=True, check=False)
    match = _DD_LINE.search(proc.stderr)
    if proc.returncode != 0 or match is None or float(match.group(2)) <= 0:
        return None
    return int(match.group(1)) / float(match.group(2))


def _rate(nbytes: int, fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return nbytes / (time.perf_counter() - t0)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def measure_snapshot_bandwidth(
    folder: str | None,
    nbytes: int,
    rounds: int,
    peers: bool,
    progress: Progress | None = None,
    drop: bool = False,
) -> dict[str, Any]:
    """Bytes/s of dd write/read, embcache save/load and (with `peers`) pickle and
    np.savez save/load, best of `rounds` interleaved rounds, in a scratch folder
    made inside `folder` (None: the system's temporary folder); with `drop`, the
    page cache is dropped before every read when permitted."""
    work = tempfile.mkdtemp(prefix="embcache-snapshot-", dir=folder)
    try:
        mib = max(1, nbytes // MIB)
        nbytes = mib * MIB
        if progress:
            progress.step(f"[snapshot] building a cache of {mib} MiB of dim-{DIM} vectors")
        cache, keys = build_cache(nbytes)
        vector_bytes = len(keys) * DIM * 4
        dd_file = os.path.join(work, "dd.bin")
        snap = os.path.join(work, "cache.snap")
        best: dict[str, float] = {}
        dropped = drop

        def drop_page_cache_if_asked() -> bool:
            return drop and drop_page_cache()

        def keep(name: str, value: float | None) -> None:
            if value is not None:
                best[name] = max(best.get(name, 0.0), value)

        holder: list[SyncEmbeddingCache] = []

        def load_once() -> None:
            holder.append(SyncEmbeddingCache.load(snap))

        for r in range(rounds):
            if progress:
                progress.step(f"[snapshot] round {r + 1}/{rounds}: dd and embcache, {mib} MiB")
            keep(
                "dd_write",
                _dd(["if=/dev/zero", f"of={dd_file}", "bs=1M", f"count={mib}", "conv=fsync"]),
            )
            keep("embcache_save", _rate(vector_bytes, lambda: cache.save(snap)))
            dropped = drop_page_cache_if_asked() and dropped
            keep("dd_read", _dd([f"if={dd_file}", "of=/dev/null", "bs=1M"]))
            dropped = drop_page_cache_if_asked() and dropped
            keep("embcache_load", _rate(vector_bytes, load_once))
            loaded = holder.pop()
            if len(loaded) != len(keys):
                raise AssertionError(f"loaded {len(loaded)} of {len(keys)} entries")
            del loaded
        if peers:
            if progress:
                progress.step("[snapshot] pickle of a dict of key -> array, np.savez")
            matrix, _ = cache.get_many(keys)
            as_dict = {k: matrix[i].copy() for i, k in enumerate(keys)}
            pkl = os.path.join(work, "cache.pkl")
            npz = os.path.join(work, "cache.npz")

            def pickle_save() -> None:
                with open(pkl, "wb") as f:
                    pickle.dump(as_dict, f, protocol=5)
                    f.flush()
                    os.fsync(f.fileno())

            def pickle_load() -> object:
                with open(pkl, "rb") as f:
                    return pickle.load(f)

            def npz_save() -> None:
                with open(npz, "wb") as f:
                    np.savez(f, vectors=matrix)
                    f.flush()
                    os.fsync(f.fileno())

            def npz_load() -> object:
                with np.load(npz) as z:
                    return z["vectors"]

            for _ in range(rounds):
                keep("pickle_save", _rate(vector_bytes, pickle_save))
                dropped = drop_page_cache_if_asked() and dropped
                keep("pickle_load", _rate(vector_bytes, pickle_load))
                keep("npz_save", _rate(vector_bytes, npz_save))
                dropped = drop_page_cache_if_asked() and dropped
                keep("npz_load", _rate(vector_bytes, npz_load))
            del as_dict, matrix
        if progress:
            progress.done()
        result: dict[str, Any] = {
            "vector_bytes": vector_bytes,
            "entries": len(keys),
            "dim": DIM,
            "rounds": rounds,
            "page_cache_dropped": dropped,
            "page_cache_drop_asked": drop,
            "statistic": "best of rounds, GiB/s of vector bytes (dd: of its own bytes)",
            "GiB_per_s": {k: round(v / GIB, 3) for k, v in best.items()},
            "goal": GOAL,
        }
        for op, dd in (("save", "dd_write"), ("load", "dd_read")):
            ours = best.get(f"embcache_{op}")
            result[f"{op}_over_dd"] = (
                round(ours / best[dd], 3) if ours is not None and dd in best else None
            )
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_sizes(quick: bool) -> tuple[int, int, bool]:
    """(vector bytes, rounds, peers) of one ``embcache check``'s snapshot step."""
    return (16 * MIB, 1, False) if quick else (256 * MIB, 3, True)


def scratch_bytes(quick: bool) -> int:
    """About the most disk space the snapshot step of ``embcache check`` uses at
    once: the dd file and the snapshot (and with the peers, the pickle and the
    npz file), each the vector bytes plus a sixteenth for keys and headers."""
    nbytes, _, peers = _check_sizes(quick)
    return (4 if peers else 2) * (nbytes + nbytes // 16)


def run_snapshot_check(
    quick: bool, folder: str | None, progress: Progress, drop: bool = False
) -> dict[str, Any]:
    """The snapshot figures of one ``embcache check``: 256 MiB, 3 rounds, with
    pickle and npz; with `quick`, 16 MiB, 1 round, embcache and dd only."""
    nbytes, rounds, peers = _check_sizes(quick)
    return measure_snapshot_bandwidth(folder, nbytes, rounds, peers, progress, drop)


def format_snapshot(result: dict[str, Any], width: int | None = None) -> list[str]:
    """The report's snapshot section, each line wrapped to `width` columns (None:
    not wrapped)."""
    g = result["GiB_per_s"]

    def cell(name: str) -> str:
        return f"{g[name]:.2f}" if name in g else "-"

    def ratio(op: str) -> str:
        r = result[f"{op}_over_dd"]
        if r is None:
            return "n/a (no dd)"
        if op == "load" and not result["page_cache_dropped"]:
            # dd then only copies cached pages; the goal is for reads from the disk
            return (f"{100 * r:.0f}% of dd (reads from memory: the {GOAL:.0%} goal is for reads "
                    "from the disk, --drop-caches)")
        return f"{100 * r:.0f}% of dd ({'meets' if r >= GOAL else 'below'} the {GOAL:.0%} goal)"

    mib = result["vector_bytes"] / MIB
    lines = [
        "",
        f"snapshot bandwidth: {mib:,.0f} MiB of dim-{result['dim']} vectors "
        f"({result['entries']:,} entries), GiB/s, best of {result['rounds']} round(s); "
        "page cache "
        + (
            "dropped before every read"
            if result["page_cache_dropped"]
            else (
                "NOT dropped (not permitted here): reads may come from memory"
                if result.get("page_cache_drop_asked")
                else "not dropped (--drop-caches drops it, as root): reads may come from memory"
            )
        ),
        f"  write: embcache save {cell('embcache_save')}   dd (conv=fsync) {cell('dd_write')}"
        f"   -> {ratio('save')}",
        f"  read:  embcache load {cell('embcache_load')}   dd {cell('dd_read')}"
        f"   -> {ratio('load')}",
    ]
    if "pickle_save" in g:
        lines.append(
            f"  peers: pickle dict save {cell('pickle_save')} / load {cell('pickle_load')};"
            f" np.savez save {cell('npz_save')} / load {cell('npz_load')}"
        )
    lines.append("  (informational: snapshot figures never change the exit code)")
    if width is None:
        return lines
    wrapped: list[str] = []
    for line in lines:
        indent = line[: len(line) - len(line.lstrip())]
        wrapped += textwrap.wrap(line, width, subsequent_indent=indent + "  ",
                                 break_on_hyphens=False) or [""]
    return wrapped
