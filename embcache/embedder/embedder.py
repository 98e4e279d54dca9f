"""CachedEmbedder: put an embcache in front of any embedding function.

``embed(texts)`` keys each text by ``CacheKey.from_text(text, model_version)``,
serves the hits from the cache, and sends only the distinct misses to the model,
in batches of ``batch_size``, through the cache's one single-flight registry
(``embcache.flight.registry``): texts another caller on the same cache is already
embedding (any embedder, thread or event loop) are waited for, not embedded
twice. Each model answer becomes one PutBatch, converted and validated once by
the core; the registry stores them together once every batch is in.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import threading
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, PutBatch, SyncEmbeddingCache
from embcache.core.checks import check_seconds
from embcache.core.info import CacheInfo
from embcache.errors import ArgumentTypeError, ArgumentValueError, InvalidKeyError
from embcache.facade.cache import EmbeddingCache, with_tier_counts
from embcache.flight.call import all_found
from embcache.flight.deadline import ModelThreads, check_deadline, run_until
from embcache.flight.registry import Flights, flights_of
from embcache.flight.timeouts import deadline_after
from embcache.identity import ModelIdentity

__all__ = ["CachedEmbedder", "EmbedFn", "EmbedderStats"]

EmbedFn = Callable[[list[str]], Union[npt.ArrayLike, Awaitable[npt.ArrayLike]]]
"""``embed_fn(texts)`` -> an (len(texts), dim) array-like, or an awaitable of one."""


@dataclass(frozen=True)
class EmbedderStats:
    """What a CachedEmbedder saved, over every ``embed``/``embed_sync`` call that
    returned (a call that raised is not counted).

    Always ``texts_requested == texts_from_cache + texts_embedded``.
    """

    texts_requested: int
    """Texts asked for, repeats included."""
    texts_from_cache: int
    """Texts answered without this embedder sending them to the model: cache
    hits, repeats within one call, and texts that another concurrent call was
    already embedding."""
    texts_embedded: int
    """Texts sent to the model (each distinct miss of a call once)."""
    model_calls: int
    """Calls made to ``embed_fn`` (one per batch)."""
    model_calls_saved: int
    """Model calls avoided: the sum over calls of ``ceil(len(texts) / batch_size)``
    (the batches an uncached embedder would have made for the same input),
    minus ``model_calls``. It is negative only in the rare case where a call had
    to recompute texts because another call embedding them was cancelled."""


_sha256 = hashlib.sha256


def _text_key(text: str, model_version: str) -> CacheKey:
    """``CacheKey.from_text(text, model_version)``, built the cheaper way: the
    SHA-256 hex digest of the UTF-8 text (hashlib), then the key from it."""
    try:
        data = str.encode(text)  # as _keys does: a str subclass's encode is not used
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(
            f"text holds a lone surrogate, which has no UTF-8 encoding ({exc})"
        ) from None
    return CacheKey(_sha256(data).hexdigest(), model_version)


def _sentence_transformer_of(embed_fn: object) -> Any:
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


def _is_async_callable(fn: object) -> bool:
    """True for an ``async def`` function, a partial of one, or an object whose
    ``__call__`` is one."""
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the method, not callable()
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _no_stop_iteration(embed_fn: EmbedFn, batch: list[str]) -> Any:
    """``embed_fn(batch)``, with a StopIteration raised as RuntimeError from it: a
    StopIteration cannot cross a future or a coroutine (asyncio.to_thread would
    never finish), and PEP 479 would turn it into a puzzling error anyway."""
    try:
        return embed_fn(batch)
    except StopIteration as exc:
        raise RuntimeError("embed_fn raised StopIteration") from exc


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _texts_of(keys: list[CacheKey], texts: Sequence[str]) -> dict[CacheKey, str]:
    """The text of each key (only needed for the misses)."""
    return dict(zip(keys, texts))


class _CallCounts:
    """Model calls and texts sent by one embed call (its compute may run twice)."""

    __slots__ = ("model_calls", "texts_embedded")

    def __init__(self) -> None:
        self.model_calls = 0
        self.texts_embedded = 0


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
    default: a new ``EmbeddingCache()``) or a SyncEmbeddingCache; ``batch_size``
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
    event loop, ``embed_sync`` calls in any thread, and other embedders. The one
    exception is a timeout: a model call abandoned at its caller's deadline may
    still be running when another caller, with time left, sends the same text
    (with the default one model thread, that call waits for the abandoned one
    to finish). A model that asks its own embedder for the texts it is embedding
    raises RuntimeError at once, in whatever thread it runs; for other texts,
    such a call runs in that model thread directly.
    """

    __slots__ = (
        "_embed_fn",
        "_model_version",
        "_identity",
        "_batch_size",
        "_timeout",
        "_threads",
        "_cache",
        "_sync",
        "_flights",
        "_embed_is_async",
        "_lock",
        "_requested",
        "_from_cache",
        "_embedded",
        "_model_calls",
        "_calls_saved",
    )

    def __init__(
        self,
        embed_fn: EmbedFn,
        model_version: str | ModelIdentity | None = None,
        *,
        cache: EmbeddingCache | SyncEmbeddingCache | None = None,
        batch_size: int = 256,
        timeout: float | None = None,
        model_threads: int = 1,
    ) -> None:
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
            model_version = identity = ModelIdentity.from_sentence_transformer(model)
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
        if isinstance(batch_size, (bool, np.bool_)) or not isinstance(
            batch_size, (int, np.integer)
        ):
            raise ArgumentTypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ArgumentValueError(f"batch_size must be >= 1, got {batch_size}")
        self._timeout = check_seconds(timeout, "timeout")
        if isinstance(model_threads, (bool, np.bool_)) or not isinstance(
            model_threads, (int, np.integer)
        ):
            raise ArgumentTypeError(
                f"model_threads must be an int, got {type(model_threads).__name__}"
            )
        if model_threads < 1:
            raise ArgumentValueError(f"model_threads must be >= 1, got {model_threads}")
        self._threads = ModelThreads(int(model_threads))
        if cache is None:
            cache = EmbeddingCache()
        if isinstance(cache, EmbeddingCache):
            self._sync = cache.sync
        elif isinstance(cache, SyncEmbeddingCache):
            self._sync = cache
        else:
            raise ArgumentTypeError(
                "cache must be an EmbeddingCache or a SyncEmbeddingCache, got "
                + type(cache).__name__
            )
        if identity is not None and self._sync.dim is not None:
            identity.check_dim(self._sync.dim, "the cache")
        self._cache = cache
        self._flights: Flights = flights_of(self._sync)
        self._embed_fn = embed_fn
        self._model_version = model_version
        self._identity = identity
        self._batch_size = int(batch_size)
        self._embed_is_async = _is_async_callable(embed_fn)
        self._lock = threading.Lock()
        self._requested = 0
        self._from_cache = 0
        self._embedded = 0
        self._model_calls = 0
        self._calls_saved = 0

    # -- properties --------------------------------------------------------------------

    @property
    def embed_fn(self) -> EmbedFn:
        """The wrapped embedding function."""
        return self._embed_fn

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
        return self._batch_size

    @property
    def timeout(self) -> float | None:
        """The time limit of each embed / embed_sync call in seconds (None: none)."""
        return self._timeout

    @property
    def model_threads(self) -> int:
        """The most sync model calls run at once under a timeout (its model threads)."""
        return self._threads.size

    @property
    def cache(self) -> EmbeddingCache | SyncEmbeddingCache:
        """The cache the vectors live in (as given, or the default EmbeddingCache)."""
        return self._cache

    @property
    def stats(self) -> EmbedderStats:
        """A snapshot of what this embedder requested, served and saved."""
        with self._lock:
            return EmbedderStats(
                texts_requested=self._requested,
                texts_from_cache=self._from_cache,
                texts_embedded=self._embedded,
                model_calls=self._model_calls,
                model_calls_saved=self._calls_saved,
            )

    def get_cache_info(self) -> CacheInfo:
        """The cache's CacheInfo, synchronously, whichever kind of cache this is
        (``await embedder.cache.get_cache_info()`` is the same for an
        EmbeddingCache, tier counts included)."""
        tier = self._cache.tier if isinstance(self._cache, EmbeddingCache) else None
        return with_tier_counts(self._sync.get_cache_info(), tier)

    def key(self, text: str) -> CacheKey:
        """The cache key of `text` under this embedder's model version
        (``CacheKey.from_text(text, model_version)``)."""
        if not isinstance(text, str):
            raise ArgumentTypeError(f"text must be a str, got {type(text).__name__}")
        return _text_key(text, self._model_version)

    # -- embedding ---------------------------------------------------------------------

    async def embed(self, texts: Iterable[str]) -> npt.NDArray[np.float32]:
        """The (len(texts), dim) float32 matrix of `texts`, in input order.

        Hits come from the cache; the distinct misses go to ``embed_fn`` in
        batches of ``batch_size``, in order. A sync ``embed_fn`` runs in a worker
        thread (``asyncio.to_thread``; with a ``timeout``, one of this
        embedder's model threads) so the event loop is not blocked; an async
        one is awaited. An empty
        `texts` gives an empty (0, dim) matrix (dim 0 when the cache has no fixed
        dimension).

        ArgumentTypeError (a TypeError) for a `texts` that is a str or holds a
        non-str (naming its index); InvalidVectorError (a ValueError) when
        ``embed_fn`` answers with the wrong shape or non-finite values (nothing of
        the call is cached then); whatever ``embed_fn`` raises.
        """
        if type(texts) is list and len(texts) == 1 and type(texts[0]) is str:
            # one text (a query): the shortest path to a hit
            text = texts[0]
            key = _text_key(text, self._model_version)
            epoch = self._flights.epoch
            row = self._sync.get(key)
            if row is not None:
                with self._lock:
                    self._requested += 1
                    self._from_cache += 1
                    self._calls_saved += 1
                return row[None]
            return await self._embed_one(text, key, epoch)
        keys, items = self._keys(texts)
        epoch = self._flights.epoch
        matrix, found = self._look_up(keys)
        if found is None:
            self._record_hits(len(keys))
            return matrix
        counts = _CallCounts()
        text_of = _texts_of(keys, items)  # `items` is ours: `texts` may change while we wait
        deadline = deadline_after(self._timeout)

        async def compute(missing: list[CacheKey]) -> list[PutBatch]:
            return await self._embed_batches(
                missing, text_of, counts, deadline, in_thread=not self._embed_is_async
            )

        # an EmbeddingCache's shared tier (if any) is consulted before embed_fn
        tier = self._cache.tier if isinstance(self._cache, EmbeddingCache) else None
        matrix = await self._flights.get_or_compute_async(
            keys,
            compute,
            what="embed_fn",
            timeout=self._timeout,
            tier=tier,
            looked_up=(epoch, matrix, found),
        )
        self._record(len(keys), counts)
        return matrix

    def embed_sync(self, texts: Iterable[str]) -> npt.NDArray[np.float32]:
        """``embed`` for scripts and threads: everything runs in the calling
        thread, except a sync ``embed_fn`` under a ``timeout``, which runs on
        this embedder's model threads so that the deadline holds (the caller's
        thread-local state, such as ``torch.no_grad()``, does not reach it there).

        An async ``embed_fn`` is run to completion in an event loop of its own
        (as ``asyncio.run`` would, cancelled at the deadline), which is only
        possible when no event loop is running in this thread: otherwise
        RuntimeError (use ``await embedder.embed(...)`` there). Texts another
        caller on the same cache is embedding are waited for (this thread blocks).
        """
        if self._embed_is_async and _loop_running():
            raise RuntimeError(
                "embed_sync cannot run an async embed_fn while an event loop is running "
                "in this thread; use 'await embedder.embed(texts)' instead"
            )
        if type(texts) is list and len(texts) == 1 and type(texts[0]) is str:
            # one text (a query): the shortest path to a hit
            text = texts[0]
            key = _text_key(text, self._model_version)
            epoch = self._flights.epoch
            row = self._sync.get(key)
            if row is not None:
                with self._lock:
                    self._requested += 1
                    self._from_cache += 1
                    self._calls_saved += 1
                return row[None]
            return self._embed_one_sync(text, key, epoch)
        keys, items = self._keys(texts)
        epoch = self._flights.epoch
        matrix, found = self._look_up(keys)
        if found is None:
            self._record_hits(len(keys))
            return matrix
        counts = _CallCounts()
        text_of = _texts_of(keys, items)  # `items` is ours: another thread may change `texts`
        deadline = deadline_after(self._timeout)

        def compute(missing: list[CacheKey]) -> list[PutBatch]:
            return self._embed_batches_sync(missing, text_of, counts, deadline)

        matrix = self._flights.get_or_compute(
            keys,
            compute,
            what="embed_fn",
            timeout=self._timeout,
            looked_up=(epoch, matrix, found),
        )
        self._record(len(keys), counts)
        return matrix

    # -- one text (a query) ------------------------------------------------------------

    async def embed_one(self, text: str) -> npt.NDArray[np.float32]:
        """The (dim,) float32 vector of one text (a query): ``(await
        embed([text]))[0]`` by the shortest path, for the frameworks' one-query
        methods. ArgumentTypeError for a `text` that is not a str."""
        if type(text) is not str and not isinstance(text, str):
            raise ArgumentTypeError(f"text must be a str, got {type(text).__name__}")
        key = _text_key(text, self._model_version)
        epoch = self._flights.epoch
        row = self._sync.get(key)
        if row is not None:
            with self._lock:
                self._requested += 1
                self._from_cache += 1
                self._calls_saved += 1
            return row
        vector: npt.NDArray[np.float32] = (await self._embed_one(text, key, epoch))[0]
        return vector

    def embed_one_sync(self, text: str) -> npt.NDArray[np.float32]:
        """The (dim,) float32 vector of one text (a query): ``embed_sync([text])[0]``
        by the shortest path (the same rules as embed_sync). ArgumentTypeError for
        a `text` that is not a str."""
        if self._embed_is_async and _loop_running():
            raise RuntimeError(
                "embed_sync cannot run an async embed_fn while an event loop is running "
                "in this thread; use 'await embedder.embed(texts)' instead"
            )
        if type(text) is not str and not isinstance(text, str):
            raise ArgumentTypeError(f"text must be a str, got {type(text).__name__}")
        # the hit path of embed_sync's one text, repeated: a call less matters here
        key = _text_key(text, self._model_version)
        epoch = self._flights.epoch
        row = self._sync.get(key)
        if row is not None:
            with self._lock:
                self._requested += 1
                self._from_cache += 1
                self._calls_saved += 1
            return row
        vector: npt.NDArray[np.float32] = self._embed_one_sync(text, key, epoch)[0]
        return vector

    def _embed_one_sync(self, text: str, key: CacheKey, epoch: int) -> npt.NDArray[np.float32]:
        """embed_sync of one text whose lookup (after `epoch`) missed: the
        registry's one-key path, the model called with ``[text]``."""
        counts = _CallCounts()
        deadline = deadline_after(self._timeout)

        def compute(missing: list[CacheKey]) -> list[PutBatch]:
            if self._embed_is_async:
                return self._embed_batches_sync(missing, {key: text}, counts, deadline)
            counts.model_calls += 1
            counts.texts_embedded += 1
            result = self._call_sync([text], deadline)
            batch = self._sync.put_batch(missing, result, what="embed_fn(misses[0:1])")
            if self._identity is not None:
                self._identity.check_dim(batch.dim, batch.what)
            batch.take()
            return [batch]

        matrix = self._flights.get_or_compute_one(
            key, compute, what="embed_fn", timeout=self._timeout, missed_at=epoch
        )
        self._record(1, counts)
        return matrix

    async def _embed_one(self, text: str, key: CacheKey, epoch: int) -> npt.NDArray[np.float32]:
        """embed of one text whose lookup (after `epoch`) missed."""
        counts = _CallCounts()
        deadline = deadline_after(self._timeout)

        async def compute(missing: list[CacheKey]) -> list[PutBatch]:
            return await self._embed_batches(
                missing, {key: text}, counts, deadline, in_thread=not self._embed_is_async
            )

        tier = self._cache.tier if isinstance(self._cache, EmbeddingCache) else None
        matrix = await self._flights.get_or_compute_one_async(
            key,
            compute,
            what="embed_fn",
            timeout=self._timeout,
            tier=tier,
            missed_at=epoch,
        )
        self._record(1, counts)
        return matrix

    # -- helpers -----------------------------------------------------------------------

    def _embed_batches_sync(
        self,
        missing: list[CacheKey],
        text_of: dict[CacheKey, str],
        counts: _CallCounts,
        deadline: float | None,
    ) -> list[PutBatch]:
        """embed_sync's compute: `missing` batch after batch, by `deadline` (an
        async embed_fn runs in an event loop of its own, cancelled at the
        deadline; a sync one as _call_sync says)."""
        if self._embed_is_async:
            return run_until(  # type: ignore[no-any-return]
                self._embed_batches(missing, text_of, counts, deadline, in_thread=False),
                deadline,
                "embed_fn",
                self._timeout,
            )
        parts: list[PutBatch] = []
        for start, batch_keys, batch in self._batches(missing, text_of):
            counts.model_calls += 1
            counts.texts_embedded += len(batch)
            result = self._call_sync(batch, deadline)
            parts.append(self._take(batch_keys, result, start, parts))
        return parts

    def _call_sync(self, batch: list[str], deadline: float | None) -> Any:
        """``embed_fn(batch)`` for embed_sync: in this thread without a timeout,
        else in a worker thread waited for until `deadline`; an awaitable answer
        run to completion in an event loop of its own (cancelled at `deadline`;
        RuntimeError when an event loop runs in this thread)."""
        if deadline is None:
            result = self._embed_fn(batch)
        else:
            result = self._threads.call(self._embed_fn, batch, deadline, "embed_fn", self._timeout)
        if type(result) is not np.ndarray and inspect.isawaitable(result):
            if _loop_running():
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: close it quietly
                raise RuntimeError(
                    "embed_fn returned an awaitable, which embed_sync cannot await "
                    "while an event loop is running in this thread; use "
                    "'await embedder.embed(texts)' instead"
                )
            result = run_until(result, deadline, "embed_fn", self._timeout)
        return result

    def _keys(self, texts: Iterable[str]) -> tuple[list[CacheKey], Sequence[str]]:
        """The key of each text, and the texts as a sequence (the hot path: one
        SHA-256 and one CacheKey per text, in a comprehension; a repeated text
        is keyed again, which costs less than looking every text up in a dict
        to save the rare repeat; the registry embeds a repeat once anyway)."""
        if type(texts) is tuple:
            items: Any = texts
        elif type(texts) is list:
            # a copy, taken atomically: the keys and the texts sent to the model
            # must come from the same contents, whatever another thread does to
            # the caller's list meanwhile
            items = tuple(texts)
        elif isinstance(texts, (str, bytes)):
            raise ArgumentTypeError(
                f"texts must be a sequence of str, not a single {type(texts).__name__}"
            )
        else:
            try:
                items = list(texts)
            except TypeError:
                raise ArgumentTypeError(
                    f"texts must be a sequence of str, got {type(texts).__name__}"
                ) from None
        model_version = self._model_version
        encode, sha256, key = str.encode, _sha256, CacheKey
        try:
            # str.encode, not text.encode: a non-str raises TypeError, whatever it has
            return [key(sha256(encode(t)).hexdigest(), model_version) for t in items], items
        except (TypeError, UnicodeEncodeError):
            pass
        for i, text in enumerate(items):  # the error, naming the text at fault
            if not isinstance(text, str):
                raise ArgumentTypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
            _text_key(text, model_version)
        raise AssertionError("unreachable: a text that failed to key keyed")  # pragma: no cover

    def _look_up(
        self, keys: list[CacheKey]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_] | None]:
        """One lookup of `keys`, counted once in the cache's statistics: the rows
        and None when every key is a hit, else ``(matrix, found)`` for the
        single-flight registry to finish (it does not look them up again)."""
        sync = self._sync
        if len(keys) == 1:
            row = sync.get(keys[0])
            if row is not None:
                return row[None], None
            return self._missed_one()
        matrix, found = sync.get_many(keys)
        if all_found(found):
            return matrix, None
        return matrix, found

    def _batches(
        self, missing: list[CacheKey], text_of: dict[CacheKey, str]
    ) -> list[tuple[int, list[CacheKey], list[str]]]:
        """`missing` in batches of batch_size: each one's offset, keys and texts."""
        size = self._batch_size
        batches = []
        for start in range(0, len(missing), size):
            batch_keys = missing[start : start + size]
            batches.append((start, batch_keys, [text_of[k] for k in batch_keys]))
        return batches

    async def _embed_batches(
        self,
        missing: list[CacheKey],
        text_of: dict[CacheKey, str],
        counts: _CallCounts,
        deadline: float | None,
        *,
        in_thread: bool,
    ) -> list[PutBatch]:
        """Embed `missing` batch after batch; a sync embed_fn runs in a worker
        thread when `in_thread` (one of this embedder's model threads under a
        timeout), and an awaitable answer is awaited. No model call is started
        once `deadline` has passed (ComputeTimeout)."""
        parts: list[PutBatch] = []
        for start, batch_keys, batch in self._batches(missing, text_of):
            check_deadline(deadline, "embed_fn", self._timeout)  # no call with no time left
            counts.model_calls += 1
            counts.texts_embedded += len(batch)
            if in_thread and deadline is not None:
                # one of this embedder's model threads: the registry cancels this
                # wait at the deadline, which abandons the call
                result = await self._threads.call_async(self._model_call, batch)
            elif in_thread:
                result = await asyncio.to_thread(_no_stop_iteration, self._embed_fn, batch)
            else:
                result = _no_stop_iteration(self._embed_fn, batch)
            if inspect.isawaitable(result):
                result = await result
            parts.append(self._take(batch_keys, result, start, parts))
        return parts

    def _model_call(self, batch: list[str]) -> Any:
        return _no_stop_iteration(self._embed_fn, batch)

    def _take(
        self, keys: list[CacheKey], result: Any, start: int, before: list[PutBatch]
    ) -> PutBatch:
        """The model's answer for one batch, converted and validated by the core
        (shape, dimension against the cache's and the earlier batches', values);
        stored later by the registry, with the other batches."""
        batch = self._sync.put_batch(
            keys,
            result,
            what=f"embed_fn(misses[{start}:{start + len(keys)}])",
            dim=before[0].dim if before else None,
        )
        if self._identity is not None:
            self._identity.check_dim(batch.dim, batch.what)
        batch.take()
        return batch

    def _missed_one(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """The lookup result of one missed key, for the single-flight registry."""
        return np.zeros((1, self._sync.dim or 0), dtype=np.float32), np.zeros(1, dtype=np.bool_)

    def _record_hits(self, n_texts: int) -> None:
        with self._lock:
            self._requested += n_texts
            self._from_cache += n_texts
            self._calls_saved += -(-n_texts // self._batch_size)

    def _record(self, n_texts: int, counts: _CallCounts) -> None:
        uncached_calls = -(-n_texts // self._batch_size)
        with self._lock:
            self._requested += n_texts
            self._embedded += counts.texts_embedded
            self._from_cache += n_texts - counts.texts_embedded
            self._model_calls += counts.model_calls
            self._calls_saved += uncached_calls - counts.model_calls

    def __repr__(self) -> str:
        return (
            f"CachedEmbedder({self._embed_fn!r}, {self._model_version!r}, "
            f"batch_size={self._batch_size})"
        )
