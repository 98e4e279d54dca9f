"""Single flight behind ``get_or_compute``: one registry per cache
(``registry.Flights``), the bookkeeping of one call (``call``), waiting
(``wait``), deadlines and model threads (``deadline``), and the timeout rules
(``timeouts``). Used by the core's ``SyncEmbeddingCache.get_or_compute`` and the
facade's ``EmbeddingCache.get_or_compute``.
"""
