"""SharedEmbeddingCache in one process: the cache's methods over a segment,
its limits, exact accounting, names, modes, create / attach / unlink / close."""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import PACKAGE_PARENT
from segments import fresh_segment_name, key_of, vector_of

from embcache import (
    ArgumentTypeError,
    ArgumentValueError,
    CacheKey,
    DimensionMismatchError,
    EntryTooLargeError,
    InvalidVectorError,
    KeyTypeError,
    SharedEmbeddingCache,
    SharedSegmentError,
    VectorTypeError,
)
from embcache.shared import ENTRY_OVERHEAD_BYTES

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@pytest.fixture
def segment_name() -> Iterator[str]:
    yield from fresh_segment_name()


def test_put_get_bit_exact_and_every_method(segment_name: str) -> None:
    dim = 24
    with SharedEmbeddingCache(segment_name, 1000, None, 8, dim=dim) as cache:
        for i in range(100):
            cache.put(key_of(i), vector_of(i, dim))
        assert len(cache) == 100
        for i in range(100):
            got = cache.get(key_of(i))
            assert got is not None and got.dtype == np.float32
            assert got.tobytes() == vector_of(i, dim).tobytes()
        assert cache.get(key_of(1000)) is None
        assert key_of(5) in cache and key_of(1000) not in cache
        keys = [key_of(i) for i in (3, 1000, 7)]
        matrix, found = cache.get_many(keys)
        assert found.tolist() == [True, False, True]
        assert matrix[0].tobytes() == vector_of(3, dim).tobytes()
        assert not matrix[1].any()
        out = np.full((3, dim), 9.0, np.float32)
        same, _ = cache.get_many(keys, out=out)
        assert same is out and not out[1].any() and out[2].tobytes() == vector_of(7, dim).tobytes()
        cache.put_many(
            [key_of(i) for i in range(100, 110)],
            np.stack([vector_of(i, dim) for i in range(100, 110)]),
        )
        assert cache.get(key_of(105)).tobytes() == vector_of(105, dim).tobytes()  # type: ignore[union-attr]
        cache.put(key_of(3), vector_of(33, dim))  # overwrite
        assert cache.get(key_of(3)).tobytes() == vector_of(33, dim).tobytes()  # type: ignore[union-attr]
        assert cache.remove(key_of(3)) and not cache.remove(key_of(3))
        info = cache.get_cache_info()
        assert info.size == len(cache) == 109
        assert info.overwrites == 1 and info.removals == 1 and info.puts == 111
        assert info.memory_usage_bytes == 109 * (dim * 4 + ENTRY_OVERHEAD_BYTES)
        assert info.entry_overhead_bytes == ENTRY_OVERHEAD_BYTES and info.dim == dim
        cache.clear()
        assert len(cache) == 0 and cache.get(key_of(5)) is None
        assert cache.verify() == []


def test_float64_and_int_input_are_stored_as_float32(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, 10, None, 1, dim=3) as cache:
        cache.put(key_of(1), [1, 2, 3])
        cache.put(key_of(2), np.array([0.1, 0.2, 0.3]))
        assert cache.get(key_of(1)).tolist() == [1.0, 2.0, 3.0]  # type: ignore[union-attr]
        assert cache.get(key_of(2)).tobytes() == np.array([0.1, 0.2, 0.3], np.float32).tobytes()  # type: ignore[union-attr]


def test_bounds_hold_and_accounting_is_exact(segment_name: str) -> None:
    dim = 64
    entry = dim * 4 + ENTRY_OVERHEAD_BYTES
    budget_mb = 600 * entry / 2**20  # room for 600 entries
    with SharedEmbeddingCache(segment_name, 5000, None, budget_mb, dim=dim) as cache:
        assert cache.capacity == 600
        for i in range(3000):
            cache.put(key_of(i), vector_of(i, dim))
            assert len(cache) <= 600 if i % 500 == 0 else True
        info = cache.get_cache_info()
        assert info.size <= 600 and info.memory_usage_bytes == info.size * entry
        assert info.memory_usage_bytes <= info.memory_budget_bytes
        assert info.size > 500  # stripes fill almost evenly
        assert info.evictions == 3000 - info.size
        for i in range(3000):
            got = cache.get(key_of(i))
            assert got is None or got.tobytes() == vector_of(i, dim).tobytes()
        assert cache.verify() == []
    with SharedEmbeddingCache(segment_name + "b", 50, None, 64, dim=dim) as small:
        try:
            for i in range(200):
                small.put(key_of(i), vector_of(i, dim))
            assert len(small) == 50 and small.capacity == 50
        finally:
            SharedEmbeddingCache.unlink(segment_name + "b")


def test_clock_keeps_the_entries_that_are_read(segment_name: str) -> None:
    dim = 4
    with SharedEmbeddingCache(segment_name, 100, None, 1, dim=dim) as cache:
        for i in range(100):
            cache.put(key_of(i), vector_of(i, dim))
        for i in range(10):  # the hot ones
            assert cache.get(key_of(i)) is not None
        for i in range(100, 150):
            cache.put(key_of(i), vector_of(i, dim))
        assert all(key_of(i) in cache for i in range(10))


def test_ttl_expires_entries(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, 100, 0.2, 1, dim=4) as cache:
        cache.put(key_of(1), vector_of(1, 4))
        assert cache.get(key_of(1)) is not None
        time.sleep(0.3)
        assert cache.get(key_of(1)) is None and key_of(1) not in cache
        assert cache.get_cache_info().expirations == 1 and len(cache) == 0


def test_bad_input_is_refused_and_changes_nothing(segment_name: str) -> None:
    dim = 4
    with SharedEmbeddingCache(segment_name, 100, None, 1, dim=dim) as cache:
        cache.put(key_of(1), vector_of(1, dim))
        before = cache.get_cache_info()
        for bad, error in (
            ([1.0, 2.0, 3.0], DimensionMismatchError),
            ([[1.0] * 4], InvalidVectorError),
            ([], InvalidVectorError),
            ([1.0, float("nan"), 0, 0], InvalidVectorError),
            ([1.0, float("inf"), 0, 0], InvalidVectorError),
            (np.array([1e300, 0, 0, 0]), InvalidVectorError),
            (["a", "b", "c", "d"], VectorTypeError),
            (None, VectorTypeError),
        ):
            with pytest.raises(error):
                cache.put(key_of(1), bad)
        with pytest.raises(KeyTypeError):
            cache.put("k", vector_of(1, dim))
        with pytest.raises(KeyTypeError):
            cache.get("k")
        with pytest.raises(KeyTypeError):
            cache.get_many(key_of(1))
        with pytest.raises(InvalidVectorError):
            cache.put_many([key_of(2), key_of(3)], np.ones((3, dim)))
        with pytest.raises(InvalidVectorError):
            cache.put_many([key_of(2), key_of(3)], np.array([[1, 1, 1, 1], [1, np.nan, 1, 1]]))
        with pytest.raises(ArgumentValueError):
            cache.get_many([key_of(1)], out=np.zeros((2, dim), np.float32))
        with pytest.raises(ArgumentTypeError):
            cache.get_many([key_of(1)], out=[[0.0] * dim])
        assert cache.get_cache_info() == before
        assert cache.get(key_of(1)).tobytes() == vector_of(1, dim).tobytes()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((0, None, 1), {"dim": 4}, ArgumentValueError),
        ((1.5, None, 1), {"dim": 4}, ArgumentTypeError),
        ((True, None, 1), {"dim": 4}, ArgumentTypeError),
        ((10, -1, 1), {"dim": 4}, ArgumentValueError),
        ((10, "1", 1), {"dim": 4}, ArgumentTypeError),
        ((10, None, 0), {"dim": 4}, ArgumentValueError),
        ((10, None, float("nan")), {"dim": 4}, ArgumentValueError),
        ((10, None, 2.0**43), {"dim": 4}, ArgumentValueError),
        ((10, None, 1), {"dim": 0}, ArgumentValueError),
        ((10, None, 1), {"dim": None}, ArgumentTypeError),
        ((10, None, 1), {"dim": 4, "storage": "float64"}, ArgumentValueError),
        ((10, None, 1), {"dim": 4, "storage": 32}, ArgumentTypeError),
        ((10, None, 1), {"dim": 4, "mode": 0o1000}, ArgumentValueError),
        ((10, None, 0.0001), {"dim": 4096}, EntryTooLargeError),
    ],
)
def test_bad_arguments_create_nothing(
    segment_name: str, args: tuple[object, ...], kwargs: dict[str, object], error: type
) -> None:
    with pytest.raises(error):
        SharedEmbeddingCache(segment_name, *args, **kwargs)  # type: ignore[arg-type]
    assert not os.path.exists(f"/dev/shm/{segment_name}")
    assert not [f for f in os.listdir("/dev/shm") if segment_name in f]


@pytest.mark.parametrize("name", ["", ".hidden", "a b", "x" * 201, "é", "a\x00b", 7])
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises((ArgumentValueError, ArgumentTypeError)):
        SharedEmbeddingCache(name, 10, None, 1, dim=4)  # type: ignore[arg-type]


def test_mode_is_exact_whatever_the_umask(segment_name: str) -> None:
    old = os.umask(0o077)
    try:
        with SharedEmbeddingCache(segment_name, 10, None, 1, dim=4, mode=0o640):
            assert stat.S_IMODE(os.stat(f"/dev/shm/{segment_name}").st_mode) == 0o640
    finally:
        os.umask(old)
    SharedEmbeddingCache.unlink(segment_name)
    with SharedEmbeddingCache(segment_name, 10, None, 1, dim=4):
        assert stat.S_IMODE(os.stat(f"/dev/shm/{segment_name}").st_mode) == 0o600


def test_a_path_name_is_used_as_given(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "seg")
    with SharedEmbeddingCache(path, 10, None, 1, dim=4) as cache:
        cache.put(key_of(1), vector_of(1, 4))
    with SharedEmbeddingCache.attach(path) as again:
        assert again.get(key_of(1)).tobytes() == vector_of(1, 4).tobytes()  # type: ignore[union-attr]
    assert [f for f in os.listdir(str(tmp_path))] == ["seg"]  # no temporary file left


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("max_entries", {"max_entries": 11}),
        ("ttl_seconds", {"ttl_seconds": 5}),
        ("max_memory_mb", {"max_memory_mb": 2}),
        ("dim", {"dim": 5}),
    ],
)
def test_attaching_with_other_limits_names_the_field(
    segment_name: str, field: str, change: dict[str, object]
) -> None:
    limits: dict[str, object] = {
        "max_entries": 10,
        "ttl_seconds": None,
        "max_memory_mb": 1,
        "dim": 4,
    }
    with SharedEmbeddingCache(segment_name, **limits) as first:  # type: ignore[arg-type]
        first.put(key_of(1), vector_of(1, 4))
        with pytest.raises(ArgumentValueError, match=f"{field} is"):
            SharedEmbeddingCache(segment_name, **{**limits, **change})  # type: ignore[arg-type]
        with SharedEmbeddingCache(segment_name, **limits) as same:  # type: ignore[arg-type]
            assert same.get(key_of(1)) is not None
        with SharedEmbeddingCache.attach(segment_name) as attached:
            assert (
                attached.max_entries,
                attached.ttl_seconds,
                attached.max_memory_mb,
                attached.dim,
                attached.storage,
            ) == (10, None, 1.0, 4, "float32")
        assert first.get(key_of(1)) is not None


def test_unlink_leaves_attached_processes_working(segment_name: str) -> None:
    cache = SharedEmbeddingCache(segment_name, 10, None, 1, dim=4)
    cache.put(key_of(1), vector_of(1, 4))
    assert SharedEmbeddingCache.unlink(segment_name) is True
    assert SharedEmbeddingCache.unlink(segment_name) is False
    assert cache.get(key_of(1)) is not None
    with pytest.raises(FileNotFoundError):
        SharedEmbeddingCache.attach(segment_name)
    with SharedEmbeddingCache(segment_name, 10, None, 1, dim=4) as fresh:  # a new segment
        assert fresh.get(key_of(1)) is None
    cache.close()


def test_a_closed_cache_refuses_calls(segment_name: str) -> None:
    cache = SharedEmbeddingCache(segment_name, 10, None, 1, dim=4)
    cache.close()
    cache.close()
    for call in (
        lambda: cache.get(key_of(1)),
        lambda: cache.put(key_of(1), [1, 2, 3, 4]),
        lambda: len(cache),
        cache.clear,
        cache.get_cache_info,
        lambda: cache.get_many([key_of(1)]),
        lambda: key_of(1) in cache,
        lambda: cache.remove(key_of(1)),
    ):
        with pytest.raises(SharedSegmentError, match="closed"):
            call()


def test_it_is_never_pickled(segment_name: str) -> None:
    import pickle

    with SharedEmbeddingCache(segment_name, 10, None, 1, dim=4) as cache, pytest.raises(TypeError):
        pickle.dumps(cache)


def test_keys_are_spread_over_stripes(segment_name: str) -> None:
    with SharedEmbeddingCache(segment_name, 100_000, None, 64, dim=4) as cache:
        assert cache.stripes > 1
        assert cache.capacity == 100_000
        keys = [CacheKey(str(i), "m") for i in range(5000)]
        cache.put_many(keys, np.ones((5000, 4)))
        assert len(cache) == 5000 and cache.verify() == []


def test_a_builder_killed_before_linking_leaves_no_file_behind(segment_name: str) -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # a process that no longer exists
    stale = f"/dev/shm/.{segment_name}.{pid}.0123456789ab.tmp"
    live = f"/dev/shm/.{segment_name}.{os.getpid()}.0123456789ab.tmp"
    for path in (stale, live):
        with open(path, "wb") as f:
            f.write(b"half built")
    try:
        with SharedEmbeddingCache(segment_name, 10, None, 1, dim=4):
            assert not os.path.exists(stale)
            assert os.path.exists(live)  # a builder still running is left alone
    finally:
        os.unlink(live)


BUILDER = """
import sys
from embcache import SharedEmbeddingCache
base = sys.argv[1]
i = 0
while True:  # build, link, close and remove segments until killed
    name = f"{base}-{i}"
    SharedEmbeddingCache(name, 200_000, None, 64, dim=64).close()
    SharedEmbeddingCache.unlink(name)
    i += 1
"""


def test_a_builder_killed_while_building_leaves_no_temporary_file(
    segment_name: str, tmp_path: Path
) -> None:
    # /dev/shm takes unnamed files (O_TMPFILE): a segment being built has no name
    # until it is linked whole, so killing its builder leaves nothing behind
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    for _ in range(5):
        env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}
        proc = subprocess.Popen([sys.executable, str(script), segment_name], cwd=tmp_path, env=env)
        time.sleep(0.3 + random.random() * 0.3)
        proc.kill()
        proc.wait()
        left = [n for n in os.listdir("/dev/shm") if n.startswith(f".{segment_name}-")]
        assert left == []
        for n in os.listdir("/dev/shm"):
            if n.startswith(f"{segment_name}-"):
                SharedEmbeddingCache.unlink(n)  # killed between linking and removing


REFUSE_PROC_LINKS = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* linkat, refusing to link a /proc/self/fd entry as a sandbox's /proc may
 * (logging each refusal to $REFUSAL_LOG); any other link is libc's. */
int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
    if (strncmp(oldpath, "/proc/self/fd/", 14) == 0) {
        FILE *log = fopen(getenv("REFUSAL_LOG"), "a");
        if (log != NULL) {
            fprintf(log, "%s\n", newpath);
            fclose(log);
        }
        errno = EPERM;
        return -1;
    }
    int (*real)(int, const char *, int, const char *, int) =
        (int (*)(int, const char *, int, const char *, int))dlsym(RTLD_NEXT, "linkat");
    return real(olddirfd, oldpath, newdirfd, newpath, flags);
}
"""

REFUSED_BUILDER = """
import os, sys
import numpy as np
from embcache import CacheKey, SharedEmbeddingCache
base = sys.argv[1]
for i in range(3):
    with SharedEmbeddingCache(f"{base}-{i}", 100, None, 1, dim=4) as cache:
        cache.put(CacheKey(str(i), "m"), np.full(4, i, dtype=np.float32))
        assert np.array_equal(cache.get(CacheKey(str(i), "m")), np.full(4, i, dtype=np.float32))
        assert cache.verify() == []
    with SharedEmbeddingCache.attach(f"{base}-{i}") as again:
        assert np.array_equal(again.get(CacheKey(str(i), "m")), np.full(4, i, dtype=np.float32))
print("built", len([n for n in os.listdir("/dev/shm") if n.startswith(base + "-")]))
"""


def test_segments_are_built_named_where_linking_an_unnamed_file_is_refused(
    segment_name: str, tmp_path: Path
) -> None:
    # a sandbox may refuse to link /proc/self/fd entries: the first build is
    # discarded and built again under a temporary name, and so are later ones,
    # with no temporary file left behind
    cc = shutil.which(sysconfig.get_config_var("CC").split()[0]) or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the linkat shim with")
    shim = tmp_path / "refuse_proc_links.so"
    (tmp_path / "shim.c").write_text(REFUSE_PROC_LINKS)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "shim.c"), "-ldl"], check=True
    )
    (tmp_path / "builder.py").write_text(REFUSED_BUILDER)
    log = tmp_path / "refusals.log"
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(shim)]))
    env = {
        **os.environ,
        "PYTHONPATH": str(PACKAGE_PARENT),
        "LD_PRELOAD": preload,
        "REFUSAL_LOG": str(log),
    }
    try:
        done = subprocess.run(
            [sys.executable, str(tmp_path / "builder.py"), segment_name],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["built", "3"]
        # refused once, for the first segment; every later build was named
        assert log.read_text().splitlines() == [f"/dev/shm/{segment_name}-0"]
        assert [n for n in os.listdir("/dev/shm") if n.startswith(f".{segment_name}-")] == []
    finally:
        for i in range(3):
            SharedEmbeddingCache.unlink(f"{segment_name}-{i}")


def test_get_many_from_many_threads_on_one_object(segment_name: str) -> None:
    # batches of up to 1,024 keys share the object's scratch arrays (one thread at
    # a time; the others allocate their own), larger ones always allocate theirs
    dim = 16
    with SharedEmbeddingCache(segment_name, 4000, None, 8, dim=dim) as cache:
        for i in range(3000):
            cache.put(key_of(i), vector_of(i, dim))
        want = np.stack([vector_of(i, dim) for i in range(3000)])
        wrong: list[tuple[int, int]] = []

        def reader(seed: int) -> None:
            rng = np.random.default_rng(seed)
            for _ in range(150):
                n = int(rng.choice([1, 7, 1024, 1025, 2500]))
                ids = rng.integers(0, 3500, n)  # ids from 3,000 up are misses
                matrix, found = cache.get_many([key_of(int(i)) for i in ids])
                expect = ids < 3000
                if not (found == expect).all() or not np.array_equal(
                    matrix[expect], want[ids[expect]]
                ):
                    wrong.append((seed, n))
                if np.any(matrix[~expect]):
                    wrong.append((seed, -n))

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wrong == []
