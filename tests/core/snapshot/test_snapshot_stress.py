"""Snapshots under a file rewritten in place: one process loads while another
rewrites the file (as rsync --inplace or a sync tool would), alternating two
saves of the same layout; every load is one save exactly, or SnapshotError."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embcache import CacheKey, SnapshotError, SyncEmbeddingCache

LOADS = 10_000

REWRITER = textwrap.dedent(
    """
    import os, sys
    path, first, second, stop = sys.argv[1:5]
    files = [open(first, "rb").read(), open(second, "rb").read()]
    fd = os.open(path, os.O_WRONLY)
    which, passes, chunks = 1, 0, (512, 4096, 65536, 1000)
    while not os.path.exists(stop):
        data, chunk = files[which], chunks[passes % len(chunks)]
        for at in range(0, len(data), chunk):
            os.pwrite(fd, data[at : at + chunk], at)
        which ^= 1
        passes += 1
    print(passes)
    """
)


@pytest.mark.slow
def test_loads_while_another_process_rewrites_the_file_in_place(tmp_path: Path) -> None:
    n, dim = 48, 128
    keys = [CacheKey(f"doc-{i}", "m") for i in range(n)]
    c = SyncEmbeddingCache(n, None, 64, dim=dim)
    rows = [np.arange(n * dim, dtype=np.float32).reshape(n, dim), np.zeros((n, dim), np.float32)]
    rows[1] -= rows[0] + 1
    # the same keys, so the same layout; the second save in the reverse recency order
    # (its entries section differs too)
    c.put_many(keys, rows[0])
    c.save(tmp_path / "a.snap")
    c.put_many(keys[::-1], rows[1][::-1])
    c.save(tmp_path / "b.snap")
    first, second = (tmp_path / "a.snap").read_bytes(), (tmp_path / "b.snap").read_bytes()
    assert len(first) == len(second) and first != second
    path = tmp_path / "live.snap"
    path.write_bytes(first)
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", REWRITER, str(path), str(tmp_path / "a.snap"),
         str(tmp_path / "b.snap"), str(stop)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    outcomes = {"a": 0, "b": 0, "refused": 0}
    try:
        for _ in range(LOADS):
            try:
                loaded = SyncEmbeddingCache.load(path)
            except SnapshotError:
                outcomes["refused"] += 1
                continue
            assert len(loaded) == n
            got, found = loaded.get_many(keys)
            assert found.all()
            if np.array_equal(got, rows[0]):
                outcomes["a"] += 1
            else:
                assert np.array_equal(got, rows[1]), "a load mixed the entries of two saves"
                outcomes["b"] += 1
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0
    passes = int(out)
    assert passes > 10, f"the file was rewritten only {passes} times"
    assert outcomes["refused"] > 0, outcomes  # the rewriting did reach the loads
    print(f"{LOADS} loads, {passes} rewrites: {outcomes}")
