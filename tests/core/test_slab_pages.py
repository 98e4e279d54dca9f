"""How slab memory is mapped in: a cache without a fixed dim fills its slab's
later chunks through huge pages (a page fault per 2 MiB, not per 4 KiB), and
only one dimension at a time may hold a huge page partly past its rows.

Page faults are counted (ru_minflt), not timed, in a fresh process per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import run_python

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not THP.exists() or "[never]" in THP.read_text(),
    reason="needs Linux transparent huge pages (madvise or always)",
)

FILL = """
import resource, numpy as np
from embcache import CacheKey, SyncEmbeddingCache
n, dim = 10_000, 768
keys = [CacheKey(str(i), "m") for i in range(n)]
vec = np.ones(dim, np.float32)
c = SyncEmbeddingCache(n, None, 64)
put = c.put
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for k in keys:
    put(k, vec)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
c._check_invariants()
"""


def test_filling_a_default_cache_faults_far_less_than_once_per_page(tmp_path: Path) -> None:
    out = run_python(["-c", FILL], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    faults = int(out.stdout)
    rows_pages = 10_000 * (768 * 4 + 4) / 4096  # ~7,500 if every 4 KiB page faulted
    # the first 2 MiB chunk on 4 KiB pages (~512 faults), then one per 2 MiB,
    # plus the interpreter's own
    assert faults < rows_pages / 4, f"{faults} minor faults for {rows_pages:.0f} pages of rows"


TWO_DIMS = """
import numpy as np
from embcache import CacheKey, SyncEmbeddingCache
MiB = 2**20
# rows of each dimension until its slab's rows end just past 8 MiB: each slab's
# last 2 MiB chunk then holds only a few KiB of rows
want = {768: -(-8 * MiB // (768 * 4 + 4)), 1024: -(-8 * MiB // (1024 * 4 + 4))}
vec = {d: np.ones(d, np.float32) for d in want}
keys = iter([CacheKey(str(i), "m") for i in range(sum(want.values()))])
c = SyncEmbeddingCache(100_000, None, 64)
done = {d: 0 for d in want}
while done != want:
    for d in want:
        if done[d] < want[d]:
            c.put(next(keys), vec[d])
            done[d] += 1
c._check_invariants()
info = c.get_cache_info()
rows = sum(n * (d * 4 + 4) for d, n in want.items())
print(info.allocated_bytes - rows, len(c))
"""


def test_only_one_dimension_holds_a_huge_page_past_its_rows(tmp_path: Path) -> None:
    out = run_python(["-c", TWO_DIMS], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    beyond_rows, entries = map(int, out.stdout.split())
    # one huge page partly past its rows (< 2 MiB), a 4 KiB page for the other
    # dimension, and the entry table and index (64 B per entry slot, 8 B per
    # cell; each at most twice what the entries need): with both dimensions on
    # huge pages it would be ~3.2 MiB past the rows
    tables = 2 * entries * 64 + 8 * entries * 8
    assert beyond_rows <= 2 * 2**20 + 2 * 4096 + tables, (
        f"{beyond_rows / 2**20:.2f} MiB resident beyond the rows (tables {tables / 2**20:.2f} MiB)"
    )
