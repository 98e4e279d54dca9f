"""The asyncio facade: ``EmbeddingCache`` over the synchronous core, with an
optional shared tier (``cache``).
"""
