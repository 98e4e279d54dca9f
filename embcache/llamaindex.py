"""The public import path of the LlamaIndex adapter.

The implementation and its documentation are in embcache.adapters.llamaindex; this
module's ``__doc__`` is that one's."""

from __future__ import annotations

import embcache.adapters.llamaindex as _impl
from embcache.adapters.llamaindex import CachedEmbedding

__doc__ = _impl.__doc__
__all__ = ["CachedEmbedding"]
