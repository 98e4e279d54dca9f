"""The public import path of the LangChain adapter.

The implementation and its documentation are in embcache.adapters.langchain; this
module's ``__doc__`` is that one's."""

from __future__ import annotations

import embcache.adapters.langchain as _impl
from embcache.adapters.langchain import QUERY_SUFFIX, CachedEmbeddings

__doc__ = _impl.__doc__
__all__ = ["QUERY_SUFFIX", "CachedEmbeddings"]
