"""CachedEmbedder: put an embcache in front of any embedding function.

``embed(texts)`` keys each text by ``CacheKey.from_text(text, model_version)``
(embcache.embedder.texts) and asks the cache for the keys with one
``get_or_compute`` call: hits come from the cache, and the distinct misses go
to the model (embcache.embedder.model) through the cache's single flight, so
texts another caller on the same cache is already embedding (any embedder,
thread or event loop) are waited for, not embedded twice; with an
EmbeddingCache's shared tier, the tier is asked before the model. A one-text
call (a query) first asks whether the cache holds its key, which counts
nothing, and takes a hit with one ``get``. The cache's statistics count each
text of a call once; the embedder counts what it saved (embcache.embedder.stats).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey
from embcache.core.checks import check_positive_int, check_seconds, is_async_callable
from embcache.core.info import CacheInfo
from embcache.core.names import check_name, track
from embcache.embedder.caches import AnyCache, cache_for
from embcache.embedder.model import EmbedCall, EmbedFn, Model
from embcache.embedder.stats import EmbedderStats, StatsCounter
from embcache.embedder.texts import keys_of, text_key
from embcache.errors import ArgumentTypeError, ArgumentValueError
from embcache.facade.cache import EmbeddingCache, with_tier_counts
from embcache.flight.deadline import ModelThreads
from embcache.identity import ModelIdentity

__all__ = ["CachedEmbedder", "EmbedFn", "EmbedderStats"]

Matrix = npt.NDArray[np.float32]


def _sentence_transformer_of(embed_fn: object) -> object:
    """The model whose bound ``encode`` `embed_fn` is, if it looks like a
    sentence-transformers model (duck-typed: nothing is imported); else None."""
    owner = getattr(embed_fn, "__self__", None)
    if getattr(embed_fn, "__name__", None) != "encode" or owner is None:
        return None
    if hasattr(owner, "get_embedding_dimension") or hasattr(
        owner, "get_sentence_embedding_dimension"
    ):
        return owner
    return None


class CachedEmbedder:
    """A caching front for an embedding function.

    ``embed_fn`` is any callable ``texts -> (len(texts), dim)`` array-like of real
    numbers, sync or async (an ``async def``, or a callable returning an
    awaitable): a sentence-transformers model's ``encode``, an HTTP client for a
    hosted API. ``model_version`` goes into every key, so vectors of different
    models never mix: a non-empty str, or a ``ModelIdentity`` (its
    ``model_version``: name, revision, dimension, dtype, normalisation, prompt);
    left out (None) only for a sentence-transformers model's own ``encode``,
    whose identity is then read off the model
    (``ModelIdentity.from_sentence_transformer``). ``cache`` is an EmbeddingCache (the
    default: a new ``EmbeddingCache(storage=storage)``), a SyncEmbeddingCache, or a
    SharedEmbeddingCache (one cache for every process of the host: a text one
    process embedded is a hit in every other);
    ``storage`` (None, the default: ``"float32"``; or ``"float16"``,
    ``"bfloat16"``, ``"int8"``) is how that default cache holds its rows (see
    SyncEmbeddingCache); a cache passed in keeps its own, and a ``storage`` that
    differs from it raises ArgumentValueError. The storage is part of no key:
    a text has the same key, and so is one entry, whatever its cache stores it
    as (a snapshot of a float16 cache loaded as int8 still answers it). ``batch_size``
    (int >= 1) is the most texts sent to ``embed_fn`` in one call. ``timeout``
    (seconds > 0, or None: no limit) bounds each ``embed``, ``embed_one``,
    ``embed_sync`` and ``embed_one_sync`` call, whether ``embed_fn`` is sync or
    async: once it is up, the call raises FlightTimeoutError (a TimeoutError),
    whether it was waiting for texts another caller is embedding (that goes on) or
    for its own model calls. An awaited model call is cancelled then (its
    coroutine sees CancelledError before the call returns; an answer it gives
    anyway is dropped); a sync ``embed_fn`` cannot be interrupted: with a
    timeout it runs on this embedder's model threads (also for ``embed_sync``):
    at most ``model_threads`` (int >= 1, default 1: one model call at a time,
    as most models need) persistent worker threads, made at the first such
    call. At the deadline the caller is free and the call is abandoned: not
    started if it still waits for a worker, else finished there, its answer
    unused (the interpreter waits at exit for a call still running). No model
    call is started once the deadline has passed. Nothing of a timed-out call
    is stored.

    Results are float32 matrices in input order. A model answer of the wrong shape
    or with NaN/inf raises ValueError (InvalidVectorError) and nothing of that call
    is cached; the message names the answer as ``embed_fn(misses[i:j])`` (the
    call's distinct uncached texts i to j, in input order) and the bad value by
    row and element, e.g. ``embed_fn(misses[256:512])[3, 17] is nan``.

    Single flight: no text is sent to the model twice at once by callers sharing
    one cache (the SyncEmbeddingCache behind it): concurrent ``embed`` calls on any
    event loop, ``embed_sync`` calls in any thread, and other embedders; over a
    SharedEmbeddingCache (without a tier), embedders in every process of the
    host too (the segment's own single flight; a waiter whose owner died or
    held a text past ``timeout`` takes it over). The one
    exception is a timeout: a model call abandoned at its caller's deadline may
    still be running when another caller, with time left, sends the same text
    (with the default one model thread, that call waits for the abandoned one
    to finish). A model that asks its own embedder for the texts it is embedding
    raises CallContextError (a RuntimeError) at once, in whatever thread it
    runs; for other texts, such a call runs in that model thread directly.

    ``name``: the embedder's label in monitoring (embcache.metrics), never part
    of a key: 1 to 64 characters from ``A-Za-z0-9_.:-`` (None: a generated
    ``embcache-N``). Embedders sharing a name are reported together.
    """

    __slots__ = (
        "_model",
        "_model_version",
        "_identity",
        "_cache",
        "_sync",
        "_async",
        "_stats",
        "_name",
        "__weakref__",
    )

    def __init__(
        self,
        embed_fn: EmbedFn,
        model_version: str | ModelIdentity | None = None,
        *,
        cache: AnyCache | None = None,
        batch_size: int = 256,
        timeout: float | None = None,
        model_threads: int = 1,
        storage: str | None = None,
        name: str | None = None,
    ) -> None:
        named = check_name(name) if name is not None else ""  # generated once all passed
        if not callable(embed_fn):
            raise ArgumentTypeError(f"embed_fn must be callable, got {type(embed_fn).__name__}")
        identity: ModelIdentity | None = None
        if model_version is None:
            model = _sentence_transformer_of(embed_fn)
            if model is None:
                raise ArgumentTypeError(
                    "model_version is required (a str or a ModelIdentity) unless embed_fn is "
                    "a sentence-transformers model's encode"
                )
            model_version = ModelIdentity.from_sentence_transformer(model)
        if isinstance(model_version, ModelIdentity):
            identity = model_version
            model_version = identity.model_version
        if not isinstance(model_version, str):
            raise ArgumentTypeError(
                "model_version must be a str or a ModelIdentity, got "
                + type(model_version).__name__
            )
        if not model_version:
            raise ArgumentValueError("model_version must be a non-empty str")
        size = check_positive_int(batch_size, "batch_size")
        seconds = check_seconds(timeout, "timeout")
        threads = ModelThreads(check_positive_int(model_threads, "model_threads"))
        cache = cache_for(cache, storage)
        if isinstance(cache, EmbeddingCache):
            self._sync = cache.sync
            self._async: EmbeddingCache | None = cache
        else:
            self._sync = cache
            self._async = None  # made by the first embed: EmbeddingCache.wrap(cache)
        if identity is not None and self._sync.dim is not None:
            identity.check_dim(self._sync.dim, "the cache")
        self._cache = cache
        self._model = Model(
            embed_fn, is_async_callable(embed_fn), size, seconds, threads, identity, self._sync
        )
        self._model_version = model_version
        self._identity = identity
        self._stats = StatsCounter(size)
        self._name = named or check_name(None)
        track("embedder", self)

    # -- properties --------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The embedder's label in monitoring (embcache.metrics); never part of a key."""
        return self._name

    @property
    def model_seconds(self) -> float:
        """Wall-clock seconds spent in ``embed_fn`` calls so far (awaiting an
        async one included; calls that raised or timed out too)."""
        return self._model.seconds

    @property
    def embed_fn(self) -> EmbedFn:
        """The wrapped embedding function."""
        return self._model.embed_fn

    @property
    def model_version(self) -> str:
        """The model version every key of this embedder carries."""
        return self._model_version

    @property
    def identity(self) -> ModelIdentity | None:
        """The ModelIdentity the model version was derived from (None when a plain
        str was given)."""
        return self._identity

    @property
    def batch_size(self) -> int:
        """The most texts sent to ``embed_fn`` in one call."""
        return self._model.batch_size

    @property
    def timeout(self) -> float | None:
        """The time limit of each embed / embed_sync call in seconds (None: none)."""
        return self._model.timeout

    @property
    def model_threads(self) -> int:
        """The most sync model calls run at once under a timeout (its model threads)."""
        return self._model.threads.size

    @property
    def cache(self) -> AnyCache:
        """The cache the vectors live in (as given, or the default EmbeddingCache)."""
        return self._cache

    @property
    def storage(self) -> str:
        """How the cache holds its rows (its ``storage``: ``"float32"``,
        ``"float16"``, ``"bfloat16"`` or ``"int8"``); vectors come back float32."""
        return self._sync.storage

    @property
    def stats(self) -> EmbedderStats:
        """A snapshot of what this embedder requested, served and saved."""
        return self._stats.snapshot()

    def get_cache_info(self) -> CacheInfo:
        """The cache's CacheInfo, synchronously, whichever kind of cache this is
        (``await embedder.cache.get_cache_info()`` is the same for an
        EmbeddingCache, tier counts included)."""
        cache = self._cache
        tier = cache.tier if isinstance(cache, EmbeddingCache) else None
        return with_tier_counts(self._sync.get_cache_info(), tier)

    def key(self, text: str) -> CacheKey:
        """The cache key of `text` under this embedder's model version
        (``CacheKey.from_text(text, model_version)``)."""
        if not isinstance(text, str):
            raise ArgumentTypeError(f"text must be a str, got {type(text).__name__}")
        return text_key(text, self._model_version)

    # -- embedding ---------------------------------------------------------------------

    async def embed(self, texts: Iterable[str]) -> Matrix:
        """The (len(texts), dim) float32 matrix of `texts`, in input order.

        Hits come from the cache; the distinct misses go to ``embed_fn`` in
        batches of ``batch_size``, in order (with an EmbeddingCache's shared
        tier, what the tier has is taken from there first). A sync
        ``embed_fn`` runs in a worker thread (``asyncio.to_thread``; with a
        ``timeout``, one of this embedder's model threads) so the event loop is
        not blocked; an async one is awaited. An empty `texts` gives an empty
        (0, dim) matrix (dim 0 when the cache has no fixed dimension).

        ArgumentTypeError (a TypeError) for a `texts` that is a str or holds a
        non-str (naming its index); InvalidVectorError (a ValueError) when
        ``embed_fn`` answers with the wrong shape or non-finite values (nothing of
        the call is cached then); whatever ``embed_fn`` raises.
        """
        keys, items = keys_of(texts, self._model_version)
        if len(keys) == 1:
            row = self._stored(keys[0])
            if row is not None:
                return row[None]
        return await self._embed(keys, items)

    def embed_sync(self, texts: Iterable[str]) -> Matrix:
        """``embed`` for scripts and threads: everything runs in the calling
        thread, except a sync ``embed_fn`` under a ``timeout``, which runs on
        this embedder's model threads so that the deadline holds (the caller's
        thread-local state, such as ``torch.no_grad()``, does not reach it there).
        An EmbeddingCache's shared tier is not used here (as by its ``sync``).

        An async ``embed_fn`` is run to completion in an event loop of its own
        (as ``asyncio.run`` would, cancelled at the deadline), which is only
        possible when no event loop is running in this thread: otherwise
        CallContextError (a RuntimeError; use ``await embedder.embed(...)``
        there). Texts another caller on the same cache is embedding are waited
        for (this thread blocks); CallContextError when that wait could never
        end (a task of the event loop running in this thread is embedding them).
        """
        if self._model.is_async:
            self._model.check_sync_context()
        keys, items = keys_of(texts, self._model_version)
        if len(keys) == 1:
            row = self._stored(keys[0])
            if row is not None:
                return row[None]
        return self._embed_sync(keys, items)

    async def embed_one(self, text: str) -> Matrix:
        """The (dim,) float32 vector of one text (a query): ``(await
        embed([text]))[0]``, for the frameworks' one-query methods.
        ArgumentTypeError for a `text` that is not a str."""
        key = text_key(text, self._model_version)
        row = self._stored(key)
        if row is None:
            row = (await self._embed([key], (text,)))[0]
        return row

    def embed_one_sync(self, text: str) -> Matrix:
        """The (dim,) float32 vector of one text (a query): ``embed_sync([text])[0]``
        (the same rules as embed_sync). ArgumentTypeError for a `text` that is
        not a str."""
        if self._model.is_async:
            self._model.check_sync_context()
        key = text_key(text, self._model_version)
        row = self._stored(key)
        if row is None:
            row = self._embed_sync([key], (text,))[0]
        return row

    # -- the requests to the cache -----------------------------------------------------

    def _stored(self, key: CacheKey) -> Matrix | None:
        """The vector of a one-text call's `key` when the cache holds it (a query's
        hit, the shortest path: a membership test, which counts nothing, then
        one counted ``get``), else None: the call then goes to get_or_compute,
        whose lookup is its only counted one. Only an entry evicted or expired
        between the two steps is looked up (and counted) twice."""
        sync = self._sync
        if key not in sync:
            return None
        row = sync.get(key)
        if row is not None:
            self._stats.record_hit()
        return row

    def _embed_sync(self, keys: list[CacheKey], texts: Sequence[str]) -> Matrix:
        """`keys` (of `texts`) from the synchronous cache's get_or_compute, blocking
        (a SharedEmbeddingCache's coalesces across processes)."""
        call = EmbedCall(self._model, keys, texts)
        matrix = self._sync.get_or_compute(keys, call.compute_sync, timeout=self._model.timeout)
        self._stats.record(len(keys), call.model_calls, call.texts_embedded)
        return matrix

    async def _embed(self, keys: list[CacheKey], texts: Sequence[str]) -> Matrix:
        """`keys` (of `texts`) from EmbeddingCache.get_or_compute, awaited."""
        cache = self._async
        if cache is None:  # a synchronous cache was given: its facade, made once
            cache = self._async = EmbeddingCache.wrap(self._sync)
        call = EmbedCall(self._model, keys, texts)
        # compute answers with taken PutBatch objects, which get_or_compute stores as they are
        compute: Any = call.compute
        matrix = await cache.get_or_compute(keys, compute, timeout=self._model.timeout)
        self._stats.record(len(keys), call.model_calls, call.texts_embedded)
        return matrix

    def __repr__(self) -> str:
        return (
            f"CachedEmbedder({self._model.embed_fn!r}, {self._model_version!r}, "
            f"batch_size={self._model.batch_size})"
        )
