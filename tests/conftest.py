"""Shared fixtures and helpers for the embcache test suite."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
"""The folder holding tests/: a clone, an unpacked sdist, or any folder the tests
were copied to (then without the source tree; see SOURCE_TREE)."""


def _prefer_installed_package() -> None:
    """From a clone's root, ``python -m pytest`` puts the root first on sys.path,
    where embcache is the uncompiled source tree unless it was built in place:
    then the tests use the installed embcache, or say exactly what to do."""
    here = REPO / "embcache"
    if not (here / "__init__.py").is_file() or any(here.glob("_core.*.so")):
        return
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    if importlib.util.find_spec("embcache") is None:
        raise pytest.UsageError(
            f"embcache is neither installed nor built in place in {REPO}: run "
            '`pip install ".[test]"` (then pytest tests the installed package), or '
            '`pip install -e ".[test]"` to build it in place'
        )


_prefer_installed_package()

import embcache  # noqa: E402
from embcache import ENTRY_OVERHEAD_BYTES, CacheKey, SyncEmbeddingCache  # noqa: E402

# The directory holding the embcache package these tests imported: the source
# tree after an in-place build, site-packages after `pip install .`.
PACKAGE_PARENT = Path(embcache.__file__).resolve().parent.parent

SOURCE_TREE = (REPO / "pyproject.toml").is_file() and (REPO / "embcache" / "_core.pyx").is_file()
"""True when the tests sit in a source tree (a clone or an unpacked sdist), which
the source checks (ruff, mypy, stubtest, the pyproject metadata) read."""
NO_SOURCE_REASON = (
    f"needs the source tree beside tests/ (pyproject.toml, embcache/*.pyx), not found in {REPO}: "
    "these tests run the tests of an installed package; run them from a clone or an unpacked "
    "sdist for the source checks"
)
needs_source_tree = pytest.mark.skipif(not SOURCE_TREE, reason=NO_SOURCE_REASON)


PROFILES = ("default", "ci")


def profile_from(environ: Mapping[str, str]) -> str:
    """The test profile an environment selects (unset or empty: "default")."""
    return environ.get("EMBCACHE_TEST_PROFILE") or "default"


PROFILE = profile_from(os.environ)
"""The test profile, from the environment variable EMBCACHE_TEST_PROFILE: "default"
(a plain `pytest`: every test runs, the property and stress tests with fewer
examples and operations) or "ci" (the heavier settings: .ci/run sets it for the
sanitizer run and the release build's suites)."""

T = TypeVar("T")


def by_profile(*, default: T, ci: T) -> T:
    """A size, count or parameter list that depends on the test profile: `ci`
    under EMBCACHE_TEST_PROFILE=ci, `default` otherwise."""
    return ci if PROFILE == "ci" else default


SANITIZED = os.environ.get("EMBCACHE_SANITIZED") == "1"
"""True in tools/sanitize.sh's run against the ASan + UBSan build, where every
instruction costs several times more: a test whose count only buys more of the
same coverage (the chaos test's kills) may run fewer there; the plain and the
release suites run the full count."""


def pytest_report_header(config: pytest.Config) -> str:
    """Which embcache (and numpy) the run tests: an installed wheel or a source
    tree; and the test profile."""
    return (
        f"embcache {embcache.__version__} from {PACKAGE_PARENT}, numpy {np.__version__}, "
        f"test profile {PROFILE}"
    )


SETTINGS_FILES = (REPO / "tests" / "pytest.ini", REPO / "pyproject.toml")
"""Where the suite's settings are read from: tests/pytest.ini (it travels with
tests/), or in a source tree's root, pyproject.toml (the same settings)."""


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run without the suite's settings (asyncio mode, warnings as
    errors, strict markers): pytest finds tests/pytest.ini only when the paths it
    is given lie inside tests/, so a bare ``pytest`` in a folder holding a copy
    of tests/ would run the suite without them, and fail in confusing ways.
    Refuse an unknown EMBCACHE_TEST_PROFILE too (a typo would run the light sizes)."""
    if PROFILE not in PROFILES:
        raise pytest.UsageError(
            f"EMBCACHE_TEST_PROFILE={PROFILE!r}: the test profiles are "
            + " and ".join(repr(p) for p in PROFILES)
        )
    found = config.inipath.resolve() if config.inipath is not None else None
    if found not in [p.resolve() for p in SETTINGS_FILES if p.is_file()]:
        raise pytest.UsageError(
            f"the embcache tests run with the settings in {SETTINGS_FILES[0]}, which "
            f"pytest did not read (configuration file: {found or 'none'}): name the tests "
            f"folder, `pytest {REPO / 'tests'}`, or run pytest inside it"
        )


def run_python(
    args: Sequence[str], *, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in `cwd` so that it imports the same embcache as the
    tests (a run from the source tree would otherwise find the uncompiled package
    when the tests use an installed one)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH")) if p
    )
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


OVERHEAD = ENTRY_OVERHEAD_BYTES
MIB = 2**20


class FakeClock:
    """A monotonic clock the tests move by hand: ``clock()`` reads it,
    ``clock.advance(s)`` moves it forward. Counts how often it was read."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock never goes back"
        self.now += seconds


def key(i: Any, model: str = "m", chunk: str | None = None) -> CacheKey:
    """A short CacheKey for test number/name ``i``."""
    return CacheKey(f"hash-{i}", model, chunk)


def vec(i: float, dim: int = 4) -> np.ndarray:
    """A float32 vector of ``dim`` values that encodes ``i`` (distinct per i)."""
    return np.arange(dim, dtype=np.float32) + np.float32(i) * 1000.0


def entry_bytes(dim: int) -> int:
    """Accounted bytes of one live entry of dimension ``dim``."""
    return dim * 4 + OVERHEAD


@dataclasses.dataclass(frozen=True)
class Snapshot:
    info: dict[str, Any]
    stored: dict[CacheKey, bytes | None]
    length: int


def snapshot(cache: Any, keys: Iterable[CacheKey] = ()) -> Snapshot:
    """Everything observable about ``cache``: every CacheInfo field, ``len``, and
    the exact bytes stored under each of ``keys`` (None when absent). Also checks
    the internal invariants. Works on the facade too.

    Reading the vectors takes one ``get`` per present key, which counts a hit and
    refreshes recency among ``keys``; ``assert_unchanged`` compensates the hits.
    """
    sync = getattr(cache, "sync", cache)
    sync._check_invariants()
    info = dataclasses.asdict(sync.get_cache_info())
    length = len(sync)
    stored: dict[CacheKey, bytes | None] = {}
    for k in keys:
        stored[k] = None
        if k in sync:
            out = sync.get(k)
            assert out is not None
            stored[k] = out.tobytes()
    return Snapshot(info=info, stored=stored, length=length)


def assert_unchanged(cache: Any, before: Snapshot) -> None:
    """The cache looks exactly as it did when ``before`` was taken."""
    after = snapshot(cache, before.stored)
    expected = dict(before.info)
    # the reads made by ``snapshot(before)`` itself are the only allowed change
    expected["hits"] += sum(v is not None for v in before.stored.values())
    lookups = expected["hits"] + expected["misses"]
    expected["hit_rate"] = expected["hits"] / lookups if lookups else 0.0
    assert after.info == expected
    assert after.stored == before.stored
    assert after.length == before.length


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache() -> SyncEmbeddingCache:
    """A roomy cache of any dimension."""
    return SyncEmbeddingCache(max_entries=64, max_memory_mb=4.0)


@pytest.fixture
def filled() -> tuple[SyncEmbeddingCache, list[CacheKey]]:
    """A cache of dim 4 holding keys 0..4 with vec(i)."""
    c = SyncEmbeddingCache(max_entries=16, max_memory_mb=1.0, dim=4)
    keys = [key(i) for i in range(5)]
    for i, k in enumerate(keys):
        c.put(k, vec(i))
    return c, keys


TIMEOUT = 10.0
"""Seconds a concurrency test waits for anything before calling it hung."""


def in_threads(*fns: Callable[[], Any]) -> list[Any]:
    """Run each fn in its own thread, started together; their results (or the
    exceptions they raised). A thread still running after TIMEOUT fails the test."""
    out: list[Any] = [None] * len(fns)
    start = threading.Barrier(len(fns))

    def target(i: int) -> None:
        start.wait(TIMEOUT)
        try:
            out[i] = fns[i]()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out[i] = exc

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
        assert not t.is_alive(), "hung"
    return out


def run(coro: Any) -> Any:
    """asyncio.run(coro), failing with TimeoutError after TIMEOUT instead of hanging."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())
