"""What a CachedEmbedder saved: EmbedderStats, and the counters behind it."""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["EmbedderStats", "StatsCounter"]


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


class StatsCounter:
    """The running totals of one embedder, thread-safe; one ``record`` per call."""

    __slots__ = (
        "_lock",
        "_batch_size",
        "_requested",
        "_from_cache",
        "_embedded",
        "_calls",
        "_saved",
    )

    def __init__(self, batch_size: int) -> None:
        self._lock = threading.Lock()
        self._batch_size = batch_size
        self._requested = 0
        self._from_cache = 0
        self._embedded = 0
        self._calls = 0
        self._saved = 0

    def record(self, n_texts: int, model_calls: int, texts_embedded: int) -> None:
        """Count one call that returned: `n_texts` asked for, of which
        `texts_embedded` were sent to the model in `model_calls` calls."""
        uncached_calls = -(-n_texts // self._batch_size)
        with self._lock:
            self._requested += n_texts
            self._from_cache += n_texts - texts_embedded
            self._embedded += texts_embedded
            self._calls += model_calls
            self._saved += uncached_calls - model_calls

    def record_hit(self) -> None:
        """Count one one-text call answered by a cache hit (``record(1, 0, 0)``)."""
        with self._lock:
            self._requested += 1
            self._from_cache += 1
            self._saved += 1

    def snapshot(self) -> EmbedderStats:
        """The totals so far, consistent with each other."""
        with self._lock:
            return EmbedderStats(
                texts_requested=self._requested,
                texts_from_cache=self._from_cache,
                texts_embedded=self._embedded,
                model_calls=self._calls,
                model_calls_saved=self._saved,
            )
