"""SharedEmbeddingCache across real processes: multiprocessing (spawn and fork)
and subprocess see each other's vectors bit for bit; processes creating one name
at once end with one segment; a forked child uses its parent's object as is."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import numpy as np
import pytest
from conftest import PACKAGE_PARENT, run_python
from forking import fork_and_run
from segments import fresh_segment_name, key_of, vector_of

from embcache import CacheKey, SharedEmbeddingCache

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

DIM = 32
LIMITS = (4096, None, 16)


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


def check_and_add(name: str, worker: int) -> tuple[int, int]:
    """In a worker: open `name`, check keys 0-199 bit for bit, add 100 keys of its
    own; (vectors that matched, vectors that did not)."""
    good = bad = 0
    with SharedEmbeddingCache(name, *LIMITS, dim=DIM) as cache:
        for i in range(200):
            got = cache.get(key_of(i))
            if got is not None and got.tobytes() == vector_of(i, DIM).tobytes():
                good += 1
            else:
                bad += 1
        mine = range(1000 + 100 * worker, 1100 + 100 * worker)
        cache.put_many([key_of(i) for i in mine], np.stack([vector_of(i, DIM) for i in mine]))
    return good, bad


def create_at_once(name: str, worker: int, barrier: Barrier, results: Queue[object]) -> None:
    """In a worker: create-or-attach `name` at the same instant as the others, put
    its key, wait for all, and report which of the workers' keys it sees."""
    barrier.wait()
    with SharedEmbeddingCache(name, *LIMITS, dim=DIM) as cache:
        cache.put(key_of(worker), vector_of(worker, DIM))
        barrier.wait()
        seen = [
            (got := cache.get(key_of(w))) is not None
            and got.tobytes() == vector_of(w, DIM).tobytes()
            for w in range(4)
        ]
    results.put((worker, seen))


def fill(name: str) -> SharedEmbeddingCache:
    cache = SharedEmbeddingCache(name, *LIMITS, dim=DIM)
    cache.put_many(
        [key_of(i) for i in range(200)], np.stack([vector_of(i, DIM) for i in range(200)])
    )
    return cache


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_workers_see_and_add_vectors_bit_exact(segment_name: str, method: str) -> None:
    with fill(segment_name) as cache, mp.get_context(method).Pool(2) as pool:
        results = pool.starmap(check_and_add, [(segment_name, w) for w in range(3)])
        assert results == [(200, 0)] * 3
        for i in range(1000, 1300):
            got = cache.get(key_of(i))
            assert got is not None and got.tobytes() == vector_of(i, DIM).tobytes()
        assert cache.verify() == []


def test_a_subprocess_reads_and_writes_bit_exact(segment_name: str) -> None:
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from embcache import CacheKey, SharedEmbeddingCache\n"
        f"cache = SharedEmbeddingCache.attach({segment_name!r})\n"
        "rows = [cache.get(CacheKey(f'doc-{i}', 'shared-test')) for i in range(200)]\n"
        "sys.stdout.write(b''.join(r.tobytes() for r in rows).hex())\n"
        "cache.put(CacheKey('from-child', 'm'), np.arange(32, dtype=np.float32) / 7)\n"
    )
    with fill(segment_name) as cache:
        done = run_python(["-c", code], cwd=PACKAGE_PARENT, timeout=120)
        assert done.returncode == 0, done.stderr
        assert bytes.fromhex(done.stdout) == b"".join(
            vector_of(i, DIM).tobytes() for i in range(200)
        )
        got = cache.get(CacheKey("from-child", "m"))
        assert got is not None
        assert got.tobytes() == (np.arange(32, dtype=np.float32) / 7).tobytes()


def test_a_forked_child_uses_its_parents_object(segment_name: str) -> None:
    with fill(segment_name) as cache:

        def child() -> bool:
            ok = all(
                (g := cache.get(key_of(i))) is not None
                and g.tobytes() == vector_of(i, DIM).tobytes()
                for i in range(200)
            )
            cache.put(key_of(5000), vector_of(5000, DIM))
            return ok and cache.verify() == []

        assert fork_and_run(child) == 0
        got = cache.get(key_of(5000))
        assert got is not None and got.tobytes() == vector_of(5000, DIM).tobytes()


def test_processes_creating_one_name_at_once_share_one_segment(segment_name: str) -> None:
    for attempt in range(3):
        name = f"{segment_name}-{attempt}"
        try:
            ctx = mp.get_context("spawn")
            barrier = ctx.Barrier(4)
            results = ctx.Queue()
            procs = [
                ctx.Process(target=create_at_once, args=(name, w, barrier, results))
                for w in range(4)
            ]
            for p in procs:
                p.start()
            seen = sorted(results.get(timeout=120) for _ in procs)
            for p in procs:
                p.join(30)
                assert p.exitcode == 0
            assert seen == [(w, [True] * 4) for w in range(4)]
            leftovers = [f for f in os.listdir("/dev/shm") if name in f]
            assert leftovers == [name]  # the losers' temporary files are gone
        finally:
            SharedEmbeddingCache.unlink(name)
