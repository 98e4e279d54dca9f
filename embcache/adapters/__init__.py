"""Framework adapters over ``CachedEmbedder``: LangChain, LlamaIndex and
sentence-transformers (public as ``embcache.langchain``, ``embcache.llamaindex``
and ``embcache.sentence_transformers``), and what they share (``common``).
Importing ``embcache`` imports none of them.
"""
