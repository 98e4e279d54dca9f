"""Shared second tiers under an ``EmbeddingCache``: the protocol a tier
implements and its statistics (``protocol``), reading through a tier
(``read``, shared by the facade and single flight), the value format on the
wire (``wire``), the direct MGET reader (``mget``), the per-node calls of a
Redis Cluster and of drop_model (``cluster``), the circuit breaker
(``breaker``) and ``RedisTier`` (``redis``; public as ``embcache.redis``).
"""
