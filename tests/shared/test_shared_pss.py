"""The segment's resident memory is counted once however many processes attach:
the sum over attached processes of their proportional set size (Pss, from
/proc/<pid>/smaps) for the segment's mapping stays within 1.05 x the row bytes
+ 8 MiB."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from segments import fresh_segment_name, key_of

from embcache import SharedEmbeddingCache

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

PROCESSES = 8
DIM = 768
ENTRIES = 8000


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


def segment_pss_kib(pid: int, path: str) -> int:
    """Pss (KiB) of `pid`'s mappings of the file `path` (by inode: the creator
    mapped it under its temporary name)."""
    inode = str(os.stat(path).st_ino)
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                inside = fields[4] == inode
            elif inside and fields[0] == "Pss:":
                total += int(fields[1])
    return total


def test_eight_processes_share_one_copy(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, 2 * ENTRIES, None, 64, dim=DIM) as cache:
        rows = np.random.default_rng(0).standard_normal((ENTRIES, DIM)).astype(np.float32)
        keys = [key_of(i) for i in range(ENTRIES)]
        cache.put_many(keys, rows)
        assert len(cache) == ENTRIES
        row_bytes = ENTRIES * DIM * 4
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pids = []
        for _ in range(PROCESSES - 1):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    with SharedEmbeddingCache.attach(segment_name) as mine:
                        matrix, found = mine.get_many(keys)
                        code = 0 if found.all() and matrix.tobytes() == rows.tobytes() else 3
                        del matrix
                        os.write(ready_w, bytes([code]))
                        os.read(go_r, 1)  # stay attached while the parent measures
                finally:
                    os._exit(code)
            pids.append(pid)
        try:
            assert [os.read(ready_r, 1) for _ in pids] == [b"\x00"] * len(pids)
            cache.get_many(keys)
            pss = [segment_pss_kib(p, cache.path) for p in [os.getpid(), *pids]]
            total = sum(pss) * 1024
            print(f"\nPss per process (KiB) {pss}; sum {total} B for {row_bytes} B of rows")
            assert total <= 1.05 * row_bytes + 8 * 2**20
            assert min(pss) > 0
        finally:
            os.write(go_w, b"x" * len(pids))
            for pid in pids:
                os.waitpid(pid, 0)
            for fd in (ready_r, ready_w, go_r, go_w):
                os.close(fd)
