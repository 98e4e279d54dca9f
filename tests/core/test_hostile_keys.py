"""Key sets an attacker or an unlucky workload would choose cannot crowd the
index: keys are placed by their BLAKE2b digest mixed with a secret per-process
key (embcache/core/keyhash.h), so every family below probes like random keys."""

from __future__ import annotations

import random

import numpy as np
import pytest

from embcache import CacheKey, SyncEmbeddingCache

N = 50_000


def families() -> dict[str, list[CacheKey]]:
    rng = random.Random(8)
    return {
        "random": [CacheKey(f"{rng.getrandbits(128):032x}", "m") for _ in range(N)],
        "sequential ids": [CacheKey(str(i), "m") for i in range(N)],
        "long shared prefix": [CacheKey("x" * 2000 + str(i), "m") for i in range(N)],
        "one character apart": [CacheKey("a" * 40 + chr(0x10000 + i), "m") for i in range(N)],
        "chunk ids of one document": [CacheKey("doc", "m", str(i)) for i in range(N)],
        "model versions": [CacheKey("doc", f"model-{i}") for i in range(N)],
    }


@pytest.fixture(scope="module")
def probes() -> dict[str, tuple[float, int]]:
    out = {}
    vector = np.ones(4, np.float32)
    for name, keys in families().items():
        c = SyncEmbeddingCache(N, None, 64, dim=4)
        for k in keys:
            c.put(k, vector)
        assert len(c) == N
        out[name] = c._probe_lengths()
    return out


@pytest.mark.parametrize(
    "name",
    [
        "sequential ids",
        "long shared prefix",
        "one character apart",
        "chunk ids of one document",
        "model versions",
    ],
)
def test_no_key_family_probes_more_than_twice_as_long_as_random_keys(
    probes: dict[str, tuple[float, int]], name: str
) -> None:
    mean, longest = probes[name]
    random_mean, random_longest = probes["random"]
    assert 1.0 <= random_mean < 2.0  # load factor <= 1/2: about 1.5 cells per lookup
    assert mean <= 2 * random_mean, f"{name}: mean probe {mean:.2f} vs {random_mean:.2f}"
    assert longest <= 4 * random_longest + 8, f"{name}: longest probe {longest}"
