"""Shared second tiers under an ``EmbeddingCache``: the protocol a tier
implements (``protocol``), the value format on the wire (``wire``), the direct
MGET reader (``mget``), the circuit breaker (``breaker``) and ``RedisTier``
(``redis``; public as ``embcache.redis``).
"""
