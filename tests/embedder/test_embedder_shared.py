"""CachedEmbedder (and cached_embedder) over a SharedEmbeddingCache: embedders in
different processes share one segment, so a text one process embedded is never
sent to the model by another."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing as mp
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest
from conftest import run
from segment_names import segment_name  # noqa: F401 (a fixture)

from embcache import (
    ArgumentValueError,
    CachedEmbedder,
    EmbeddingCache,
    SharedEmbeddingCache,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

DIM = 12
LIMITS = (2000, None, 8)


def model(texts: list[str]) -> np.ndarray:
    """A text's vector: a function of the text alone."""
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i] = np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(DIM)
    return out


def stable_model(texts: list[str]) -> np.ndarray:
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i] = np.frombuffer(t.encode().ljust(DIM, b"#")[:DIM], dtype=np.uint8) / 8.0
    return out


def embed_in_process(name: str, texts: list[str], use_async: bool) -> tuple[list[str], bytes]:
    """In a spawned process: a CachedEmbedder over segment `name` embeds `texts`;
    (the texts its model was sent, the matrix's bytes)."""
    sent: list[str] = []

    def embed_fn(batch: list[str]) -> np.ndarray:
        sent.extend(batch)
        return stable_model(batch)

    with SharedEmbeddingCache(name, *LIMITS, dim=DIM) as shared:
        embedder = CachedEmbedder(embed_fn, "model-v1", cache=shared)
        if use_async:
            matrix = asyncio.run(embedder.embed(texts))
        else:
            matrix = embedder.embed_sync(texts)
    return sent, matrix.tobytes()


@pytest.mark.parametrize("use_async", [False, True], ids=["embed_sync", "embed"])
def test_a_second_process_computes_nothing_the_first_computed(
    segment_name: str,  # noqa: F811
    use_async: bool,
) -> None:
    first = [f"doc {i}" for i in range(40)]
    second = first[::2] + [f"new {i}" for i in range(10)]
    ctx = mp.get_context("spawn")
    results = []
    for texts in (first, second):  # one fresh process each, one after the other
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            results.append(pool.submit(embed_in_process, segment_name, texts, use_async).result(60))
    (sent1, raw1), (sent2, raw2) = results
    assert sent1 == first
    assert sent2 == [f"new {i}" for i in range(10)]
    np.testing.assert_array_equal(
        np.frombuffer(raw1, dtype=np.float32).reshape(-1, DIM), stable_model(first)
    )
    np.testing.assert_array_equal(
        np.frombuffer(raw2, dtype=np.float32).reshape(-1, DIM), stable_model(second)
    )
    with SharedEmbeddingCache.attach(segment_name) as shared:
        assert len(shared) == 50


def test_embedders_of_one_process_share_one_flight_over_the_segment(
    segment_name: str,  # noqa: F811
) -> None:
    sent: list[list[str]] = []
    lock = threading.Lock()

    def slow(texts: list[str]) -> np.ndarray:
        with lock:
            sent.append(list(texts))
        time.sleep(0.05)
        return model(texts)

    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as shared:
        a = CachedEmbedder(slow, "v", cache=shared)
        b = CachedEmbedder(slow, "v", cache=shared)

        async def both() -> list[np.ndarray]:
            return list(await asyncio.gather(a.embed(["x", "y"]), b.embed(["y", "x"])))

        got = run(both())
        assert sorted(t for batch in sent for t in batch) == ["x", "y"]  # each text once
        np.testing.assert_array_equal(got[0], got[1][::-1])
        assert b.embed_sync(["x"]).tobytes() == got[0][:1].tobytes()  # a hit
        assert a.stats.model_calls + b.stats.model_calls == 1
        assert a.cache is shared and a.storage == "float32"
        assert isinstance(a.get_cache_info().size, int) and a.get_cache_info().size == 2


def test_a_shared_cache_keeps_its_storage_and_checks_the_model_dimension(
    segment_name: str,  # noqa: F811
) -> None:
    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as shared:
        with pytest.raises(ArgumentValueError, match="storage='int8'"):
            CachedEmbedder(model, "v", cache=shared, storage="int8")
        wrong = CachedEmbedder(lambda texts: np.ones((len(texts), DIM + 1)), "w", cache=shared)
        with pytest.raises(ValueError, match="dim"):
            wrong.embed_sync(["a", "b"])
        with pytest.raises(ValueError, match="dim"):
            run(wrong.embed(["a"]))
        assert len(shared) == 0  # nothing of a rejected answer stored


def test_an_embedder_over_a_wrapped_shared_cache(segment_name: str) -> None:  # noqa: F811
    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as shared:
        embedder = CachedEmbedder(model, "v", cache=EmbeddingCache.wrap(shared))
        got = run(embedder.embed(["p", "q"]))
        np.testing.assert_array_equal(shared.get(embedder.key("q")), got[1])


def embed_at_once(name: str, texts: list[str], barrier: Any, results: Any) -> None:
    """In a spawned process: wait for the others, then embed `texts` with a slow
    model through embed_sync; report (texts sent to the model, matrix bytes)."""
    sent: list[str] = []

    def slow(batch: list[str]) -> np.ndarray:
        sent.extend(batch)
        time.sleep(0.3)
        return stable_model(batch)

    with SharedEmbeddingCache(name, *LIMITS, dim=DIM) as shared:
        embedder = CachedEmbedder(slow, "model-v1", cache=shared, batch_size=4)
        barrier.wait()
        matrix = embedder.embed_sync(texts)
    results.put((sent, matrix.tobytes()))


def embed_async_at_once(name: str, texts: list[str], barrier: Any, results: Any) -> None:
    """As embed_at_once, through the async ``embed`` with an async model."""
    sent: list[str] = []

    async def slow(batch: list[str]) -> np.ndarray:
        sent.extend(batch)
        await asyncio.sleep(0.3)
        return stable_model(batch)

    async def main(embedder: CachedEmbedder) -> np.ndarray:
        # two tasks of this process asking at once too
        both = await asyncio.gather(embedder.embed(texts), embedder.embed(texts[::-1]))
        np.testing.assert_array_equal(both[0], both[1][::-1])
        return both[0]

    with SharedEmbeddingCache(name, *LIMITS, dim=DIM) as shared:
        embedder = CachedEmbedder(slow, "model-v1", cache=shared, batch_size=4)
        barrier.wait()
        matrix = asyncio.run(main(embedder))
    results.put((sent, matrix.tobytes()))


@pytest.mark.parametrize("target", [embed_at_once, embed_async_at_once], ids=["sync", "async"])
def test_embedders_in_several_processes_send_each_text_to_a_model_once(
    segment_name: str,  # noqa: F811
    target: Any,
) -> None:
    """Three spawned processes embed the same texts at once (embed_sync, or embed
    with two tasks each): every text reaches a model once in total."""
    texts = [f"text {i}" for i in range(12)]
    SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM).close()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    workers = [
        ctx.Process(target=target, args=(segment_name, order, barrier, results))
        for order in (texts, texts[::-1], texts[3:] + texts[:3])
    ]
    for w in workers:
        w.start()
    got = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    assert sorted(t for s, _ in got for t in s) == sorted(texts)  # once, by one of the three
    for _, raw in got:
        matrix = np.frombuffer(raw, dtype=np.float32).reshape(-1, DIM)
        assert {r.tobytes() for r in matrix} == {r.tobytes() for r in stable_model(texts)}


def test_embed_under_a_timeout_over_a_shared_cache(segment_name: str) -> None:  # noqa: F811
    from embcache import FlightTimeoutError

    async def slow(batch: list[str]) -> np.ndarray:
        await asyncio.sleep(5)
        return stable_model(batch)

    with SharedEmbeddingCache(segment_name, *LIMITS, dim=DIM) as shared:
        quick = CachedEmbedder(stable_model, "v", cache=shared, timeout=5.0)
        np.testing.assert_array_equal(run(quick.embed(["a"])), stable_model(["a"]))
        np.testing.assert_array_equal(quick.embed_sync(["b"]), stable_model(["b"]))
        late = CachedEmbedder(slow, "v2", cache=shared, timeout=0.2)
        started = time.monotonic()
        with pytest.raises(FlightTimeoutError):
            run(late.embed(["c"]))
        assert time.monotonic() - started < 4
