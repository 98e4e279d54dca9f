"""What the framework adapters (embcache.langchain, embcache.llamaindex) share;
imports no framework."""

from __future__ import annotations

from embcache.embedder.embedder import EmbedderStats

__all__ = ["QUERY_SUFFIX", "sum_stats"]

QUERY_SUFFIX = "|query"
"""Appended to the model version of query keys: many models embed a query
differently from a document (an instruction prefix), so the two never share an
entry."""


def sum_stats(parts: list[EmbedderStats]) -> EmbedderStats:
    """The field-by-field sum of `parts` (an adapter's embedders together)."""
    return EmbedderStats(
        texts_requested=sum(s.texts_requested for s in parts),
        texts_from_cache=sum(s.texts_from_cache for s in parts),
        texts_embedded=sum(s.texts_embedded for s in parts),
        model_calls=sum(s.model_calls for s in parts),
        model_calls_saved=sum(s.model_calls_saved for s in parts),
    )
