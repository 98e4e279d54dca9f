"""The public import path of the sentence-transformers adapter.

The implementation and its documentation are in embcache.adapters.sentence_transformers; this
module's ``__doc__`` is that one's."""

from __future__ import annotations

import embcache.adapters.sentence_transformers as _impl
from embcache.adapters.sentence_transformers import cached_embedder

__doc__ = _impl.__doc__
__all__ = ["cached_embedder"]
