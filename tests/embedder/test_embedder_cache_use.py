"""How CachedEmbedder uses its cache: through the caches' public ``get_or_compute``
(a SyncEmbeddingCache gets an asyncio facade from ``EmbeddingCache.wrap``),
each text of a call looked up once in the cache's statistics, its argument
checks shared with the rest of the package, and its modules small and layered
(no single-flight internals in the embedder, no underscore names of other
modules in the embedder or the adapters).
"""

from __future__ import annotations

import ast
import asyncio
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TIMEOUT, run

from embcache import CacheKey, EmbeddingCache, SyncEmbeddingCache
from embcache.embedder.embedder import CachedEmbedder
from embcache.errors import ArgumentTypeError, ArgumentValueError
from embcache.identity import ModelIdentity

DIM = 4
PACKAGE = Path(__file__).resolve().parents[2] / "embcache"


def model(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), 1.0, 2.0, 3.0] for t in texts], dtype=np.float32)


# -- EmbeddingCache.wrap ---------------------------------------------------------------


def test_wrap_is_a_facade_over_the_same_core() -> None:
    sync = SyncEmbeddingCache(100, dim=DIM)
    cache = EmbeddingCache.wrap(sync)
    assert cache.sync is sync and cache.tier is None
    key = CacheKey.from_text("a", "m")
    run(cache.put(key, np.ones(DIM)))
    np.testing.assert_array_equal(sync.get(key), np.ones(DIM))  # one set of entries
    assert sync.get_cache_info() == run(cache.get_cache_info())  # one set of statistics
    calls: list[list[CacheKey]] = []

    def compute(missing: list[CacheKey]) -> np.ndarray:
        calls.append(missing)
        return np.full((len(missing), DIM), 2.0)

    other = CacheKey.from_text("b", "m")
    np.testing.assert_array_equal(
        run(cache.get_or_compute([key, other], compute)), [[1] * 4, [2] * 4]
    )
    np.testing.assert_array_equal(sync.get_or_compute([other], compute), [[2] * 4])
    assert calls == [[other]]


def test_wrap_shares_single_flight_with_the_sync_core() -> None:
    """A key computed by a thread on the SyncEmbeddingCache is waited for by a task
    on the wrapped facade, not computed again."""
    sync = SyncEmbeddingCache(100, dim=DIM)
    cache = EmbeddingCache.wrap(sync)
    key = CacheKey.from_text("slow", "m")
    entered, release = threading.Event(), threading.Event()
    computed: list[str] = []

    def slow(missing: list[CacheKey]) -> np.ndarray:
        computed.append("thread")
        entered.set()
        assert release.wait(TIMEOUT)
        return np.ones((len(missing), DIM))

    def fast(missing: list[CacheKey]) -> np.ndarray:  # pragma: no cover - must not run
        computed.append("task")
        return np.zeros((len(missing), DIM))

    owner = threading.Thread(target=lambda: sync.get_or_compute([key], slow))
    owner.start()
    assert entered.wait(TIMEOUT)

    async def waiter() -> np.ndarray:
        task = asyncio.ensure_future(cache.get_or_compute([key], fast))
        await asyncio.sleep(0.05)
        release.set()
        return await task

    np.testing.assert_array_equal(run(waiter()), np.ones((1, DIM)))
    owner.join(TIMEOUT)
    assert computed == ["thread"]


@pytest.mark.parametrize("bad", [None, EmbeddingCache(10), {}, "cache"])
def test_wrap_refuses_anything_but_a_sync_cache(bad: Any) -> None:
    with pytest.raises(ArgumentTypeError, match="wrap needs a SyncEmbeddingCache"):
        EmbeddingCache.wrap(bad)


def test_embed_over_a_sync_cache_awaits_its_wrapped_facade() -> None:
    sync = SyncEmbeddingCache(100, dim=DIM)
    embedder = CachedEmbedder(model, "m", cache=sync)
    np.testing.assert_array_equal(run(embedder.embed(["ab", "c"])), model(["ab", "c"]))
    assert embedder.cache is sync and len(sync) == 2
    np.testing.assert_array_equal(embedder.embed_sync(["c", "ab"]), model(["c", "ab"]))
    np.testing.assert_array_equal(run(embedder.embed_one("ab")), model(["ab"])[0])
    assert embedder.stats.texts_embedded == 2


# -- the cache's statistics see each text of a call once -------------------------------


def counts(embedder: CachedEmbedder) -> tuple[int, int]:
    info = embedder.get_cache_info()
    return info.hits, info.misses


CALLS = {
    "embed_sync": lambda e, texts: e.embed_sync(texts),
    "embed": lambda e, texts: run(e.embed(texts)),
    "embed_one_sync": lambda e, texts: e.embed_one_sync(texts[0])[None],
    "embed_one": lambda e, texts: run(e.embed_one(texts[0]))[None],
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("how", list(CALLS))
def test_each_text_of_a_call_is_looked_up_once(kind: str, how: str) -> None:
    cache = SyncEmbeddingCache(100, dim=DIM) if kind == "sync" else EmbeddingCache(100, dim=DIM)
    embedder = CachedEmbedder(model, "m", cache=cache)
    call = CALLS[how]
    one = how.startswith("embed_one")
    texts = ["a"] if one else ["a", "bb", "a", "ccc"]
    call(embedder, texts)  # all misses
    assert counts(embedder) == (0, len(texts))
    np.testing.assert_array_equal(call(embedder, texts), model(texts))  # all hits
    assert counts(embedder) == (len(texts), len(texts))
    if not one:
        call(embedder, ["a", "dddd"])  # one hit, one miss
        assert counts(embedder) == (len(texts) + 1, len(texts) + 1)
    call(embedder, ["new"])  # one text, a miss
    call(embedder, ["new"])  # one text, a hit
    hits, misses = counts(embedder)
    assert (hits, misses) == (len(texts) + 1 + (not one), len(texts) + 1 + (not one))
    stats = embedder.stats
    assert stats.texts_requested == stats.texts_from_cache + stats.texts_embedded
    assert stats.texts_embedded == len(set(texts)) + 1 + (not one)


# -- shared argument checks -----------------------------------------------------------


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, 0, -1.0])
def test_timeout_must_be_finite_and_positive(bad: float) -> None:
    with pytest.raises(ArgumentValueError, match="timeout must be a finite number > 0"):
        CachedEmbedder(model, "m", timeout=bad)


@pytest.mark.parametrize("name", ["batch_size", "model_threads"])
def test_positive_ints_take_any_index_and_refuse_bools(name: str) -> None:
    embedder = CachedEmbedder(model, "m", **{name: np.int64(3)})
    assert getattr(embedder, name) == 3 and type(getattr(embedder, name)) is int
    for bad in (True, np.bool_(True), 2.0, "2"):
        with pytest.raises(ArgumentTypeError, match=f"{name} must be an int"):
            CachedEmbedder(model, "m", **{name: bad})
    with pytest.raises(ArgumentValueError, match=f"{name} must be >= 1, got 0"):
        CachedEmbedder(model, "m", **{name: 0})


def test_model_identity_dim_uses_the_shared_check() -> None:
    assert ModelIdentity("m", dim=np.int32(4)).dim == 4
    with pytest.raises(ArgumentTypeError, match="dim must be an int, got bool"):
        ModelIdentity("m", dim=True)
    with pytest.raises(ArgumentValueError, match="dim must be >= 1, got 0"):
        ModelIdentity("m", dim=0)


# -- layering and size ----------------------------------------------------------------


def sources(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


@pytest.mark.parametrize("folder", ["embedder", "adapters"])
def test_no_file_over_600_lines(folder: str) -> None:
    long = {p.name: n for p in sources(folder) if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def imported(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from module import name`` of `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def test_the_embedder_uses_no_single_flight_internals() -> None:
    """Single flight comes from the caches' get_or_compute: of embcache.flight the
    embedder uses only the model-thread and deadline helpers."""
    for path in sources("embedder"):
        for module, name in imported(path):
            if module.startswith("embcache.flight"):
                assert (module, name) == ("embcache.flight.deadline", name) and name in {
                    "ModelThreads",
                    "check_deadline",
                    "run_until",
                }, (path.name, module, name)
        text = path.read_text()
        assert "flights" not in text and ".epoch" not in text, path.name


@pytest.mark.parametrize("folder", ["embedder", "adapters"])
def test_no_underscore_name_of_another_module(folder: str) -> None:
    for path in sources(folder):
        for module, name in imported(path):
            assert not name.startswith("_") or name == "__future__", (path.name, module, name)
            if folder == "adapters" and module.startswith("embcache."):
                assert not module.startswith("embcache.flight"), (path.name, module)
