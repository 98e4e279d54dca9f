"""``CachedEmbedder``: a model's embedding function behind a cache (``embedder``)."""
