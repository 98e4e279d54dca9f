"""The model side of a CachedEmbedder: how ``embed_fn`` is called, and the
compute a call hands to the cache's ``get_or_compute``.

Single flight calls a compute with the call's distinct missing keys (those no
other caller is computing), in input order. ``EmbedCall`` sends their texts to
the model in batches of ``batch_size``; each answer becomes one PutBatch of the
cache, converted and validated once by the core (shape, dimension against the
earlier batches', values), named ``embed_fn(misses[i:j])`` in errors; the
cache stores them together once every batch is in.

Deadlines: a call's deadline is fixed when it starts (``timeout`` seconds on).
No model call is started once it has passed (ComputeTimeout); a sync model under
a timeout runs on the embedder's ModelThreads, waited for until the deadline;
an async model called from a thread runs in an event loop of its own, cancelled
at the deadline (run_until); awaited on the caller's loop, the cache's
get_or_compute cancels it at the deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Sequence
from typing import Any, Callable, Union

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey
from embcache.core.protocol import CoreCache, PutRows
from embcache.errors import CallContextError
from embcache.flight.deadline import ModelThreads, check_deadline, run_until
from embcache.identity import ModelIdentity

__all__ = ["EmbedCall", "EmbedFn", "Model", "loop_running"]

EmbedFn = Callable[[list[str]], Union[npt.ArrayLike, Awaitable[npt.ArrayLike]]]
"""``embed_fn(texts)`` -> an (len(texts), dim) array-like, or an awaitable of one."""

WHAT = "embed_fn"


def loop_running() -> bool:
    """True when an event loop is running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _no_stop_iteration(embed_fn: EmbedFn, batch: list[str]) -> Any:
    """``embed_fn(batch)``, with a StopIteration raised as RuntimeError from it: a
    StopIteration cannot cross a future or a coroutine (asyncio.to_thread would
    never finish), and PEP 479 would turn it into a puzzling error anyway."""
    try:
        return embed_fn(batch)
    except StopIteration as exc:
        raise RuntimeError("embed_fn raised StopIteration") from exc


class Model:
    """One embedder's ``embed_fn`` and how it is called: in batches of
    `batch_size`, its answers taken by `core` (the cache's synchronous core: a SyncEmbeddingCache or
    SharedEmbeddingCache),
    under `timeout` on `threads` when sync."""

    __slots__ = (
        "embed_fn",
        "is_async",
        "batch_size",
        "timeout",
        "threads",
        "identity",
        "core",
        "seconds",
        "seconds_lock",
    )

    def __init__(
        self,
        embed_fn: EmbedFn,
        is_async: bool,
        batch_size: int,
        timeout: float | None,
        threads: ModelThreads,
        identity: ModelIdentity | None,
        core: CoreCache,
    ) -> None:
        self.embed_fn = embed_fn
        self.is_async = is_async
        self.batch_size = batch_size
        self.timeout = timeout
        self.threads = threads
        self.identity = identity
        self.core = core
        self.seconds = 0.0
        """Wall-clock seconds spent in embed_fn calls (see add_seconds)."""
        self.seconds_lock = threading.Lock()

    def add_seconds(self, since: float) -> None:
        """Count the time from `since` (a time.perf_counter reading) to now as
        spent in embed_fn (thread-safe)."""
        spent = time.perf_counter() - since
        with self.seconds_lock:
            self.seconds += spent

    def check_sync_context(self) -> None:
        """CallContextError when a sync embed of an async ``embed_fn`` is asked for
        in a thread running an event loop (it could never run it there)."""
        if self.is_async and loop_running():
            raise CallContextError(
                "embed_sync cannot run an async embed_fn while an event loop is running "
                "in this thread; use 'await embedder.embed(texts)' instead"
            )

    def batches(
        self, missing: list[CacheKey], text_of: dict[CacheKey, str]
    ) -> list[tuple[int, list[CacheKey], list[str]]]:
        """`missing` in batches of batch_size: each one's offset, keys and texts."""
        size = self.batch_size
        batches = []
        for start in range(0, len(missing), size):
            batch_keys = missing[start : start + size]
            batches.append((start, batch_keys, [text_of[k] for k in batch_keys]))
        return batches

    def take(self, keys: list[CacheKey], result: Any, start: int, before: list[PutRows]) -> PutRows:
        """The model's answer for one batch, converted and validated by the core
        (shape, dimension against the cache's and the earlier batches', values);
        stored later by single flight, with the other batches."""
        batch = self.core.put_batch(
            keys,
            result,
            what=f"embed_fn(misses[{start}:{start + len(keys)}])",
            dim=before[0].dim if before else None,
        )
        if self.identity is not None:
            self.identity.check_dim(batch.dim, batch.what)
        batch.take()
        return batch

    def call_sync(self, batch: list[str], deadline: float | None) -> Any:
        """``embed_fn(batch)`` from a thread: in this thread without a timeout,
        else on a model thread waited for until `deadline`; an awaitable answer
        run to completion in an event loop of its own (cancelled at `deadline`;
        CallContextError when an event loop runs in this thread)."""
        began = time.perf_counter()
        try:
            if deadline is None:
                result = _no_stop_iteration(self.embed_fn, batch)
            else:
                result = self.threads.call(self.call_in_thread, batch, deadline, WHAT, self.timeout)
            if type(result) is not np.ndarray and inspect.isawaitable(result):
                if loop_running():
                    if inspect.iscoroutine(result):
                        result.close()  # never awaited: close it quietly
                    raise CallContextError(
                        "embed_fn returned an awaitable, which embed_sync cannot await "
                        "while an event loop is running in this thread; use "
                        "'await embedder.embed(texts)' instead"
                    )
                result = run_until(result, deadline, WHAT, self.timeout)
        finally:
            self.add_seconds(began)
        return result

    def call_in_thread(self, batch: list[str]) -> Any:
        """``embed_fn(batch)`` as a model thread runs it."""
        return _no_stop_iteration(self.embed_fn, batch)


class EmbedCall:
    """One embed call's compute for ``get_or_compute``, and what it sent to the
    model (its compute may run twice: a caller computing texts it waited for
    was cancelled)."""

    __slots__ = ("model", "keys", "texts", "deadline", "model_calls", "texts_embedded")

    def __init__(self, model: Model, keys: list[CacheKey], texts: Sequence[str]) -> None:
        self.model = model
        self.keys = keys
        self.texts = texts
        timeout = model.timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.model_calls = 0
        self.texts_embedded = 0

    def _text_of(self) -> dict[CacheKey, str]:
        """The text of each key (only the misses need it)."""
        return dict(zip(self.keys, self.texts))

    def compute_sync(self, missing: list[CacheKey]) -> list[PutRows]:
        """The compute of embed_sync: `missing` batch after batch in this thread
        (a sync embed_fn as Model.call_sync says; an async one in an event loop
        of its own, cancelled at the deadline)."""
        model = self.model
        if model.is_async:
            return run_until(  # type: ignore[no-any-return]
                self.compute(missing), self.deadline, WHAT, model.timeout
            )
        parts: list[PutRows] = []
        for start, batch_keys, batch in model.batches(missing, self._text_of()):
            self.model_calls += 1
            self.texts_embedded += len(batch)
            result = model.call_sync(batch, self.deadline)
            parts.append(model.take(batch_keys, result, start, parts))
        return parts

    async def compute(self, missing: list[CacheKey]) -> list[PutRows]:
        """The compute of embed: `missing` batch after batch; a sync embed_fn runs
        in a worker thread (one of the embedder's model threads under a
        timeout) so the event loop is not blocked, and an awaitable answer is
        awaited. No model call is started once the deadline has passed."""
        model = self.model
        in_thread = not model.is_async
        deadline = self.deadline
        parts: list[PutRows] = []
        for start, batch_keys, batch in model.batches(missing, self._text_of()):
            check_deadline(deadline, WHAT, model.timeout)  # no call with no time left
            self.model_calls += 1
            self.texts_embedded += len(batch)
            began = time.perf_counter()
            try:
                if in_thread and deadline is not None:
                    # one of the embedder's model threads: get_or_compute cancels this
                    # wait at the deadline, which abandons the call
                    result = await model.threads.call_async(model.call_in_thread, batch)
                elif in_thread:
                    result = await asyncio.to_thread(_no_stop_iteration, model.embed_fn, batch)
                else:
                    result = _no_stop_iteration(model.embed_fn, batch)
                if inspect.isawaitable(result):
                    result = await result
            finally:
                model.add_seconds(began)
            parts.append(model.take(batch_keys, result, start, parts))
        return parts
