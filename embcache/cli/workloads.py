"""The workloads embcache is measured and tested with, defined once.

``embcache check``, the asv suites in benchmarks/ and tests/facade/test_acceptance.py
all build their keys, vectors and random streams here, so a figure in the
check, a benchmark and a test mean the same work:

* keys: :func:`workload_key` (``CacheKey("benchmark_key_<i>", MODEL,
  "chunk_<i % 100>")``), or :func:`sha_key` with a realistic 64-hex content
  hash; the comparison's keys (:func:`comparison_inputs`) have 64-hex content
  hashes as well;
* one model string, :data:`MODEL`;
* vectors: :func:`workload_vector` (``i / dim`` as float32) or standard-normal
  float32 vectors from a Generator seeded with :data:`RNG_SEED`;
* random streams: :func:`rng`, seeded with :data:`RNG_SEED` plus a salt (the
  asv suites' random orders, benchmarks/_util.py, come from it too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from embcache import ENTRY_OVERHEAD_BYTES, CacheKey

__all__ = [
    "DIM",
    "MODEL",
    "RNG_SEED",
    "CheckConfig",
    "ComparisonInputs",
    "budget_mb",
    "comparison_inputs",
    "rng",
    "sha_key",
    "workload_key",
    "workload_vector",
]

Vector = npt.NDArray[np.float32]

MODEL = "nomic-embed-text-v1.5"
"""The model version string of every workload key."""

RNG_SEED = 20240528
"""Seed of every random stream (numpy Generator), plus a per-use salt."""

DIM = 768
"""The default embedding dimension (the size of many production models)."""

MIB = 2**20


def rng(salt: int = 0) -> np.random.Generator:
    """A numpy Generator seeded with ``RNG_SEED + salt``."""
    return np.random.default_rng(RNG_SEED + salt)


def workload_key(i: int, model: str = MODEL) -> CacheKey:
    """Key number `i`: ``CacheKey(f"benchmark_key_{i}", model, f"chunk_{i % 100}")``."""
    return CacheKey(f"benchmark_key_{i}", model, f"chunk_{i % 100}")


def sha_key(i: int, model: str = MODEL) -> CacheKey:
    """A realistic key: the SHA-256 hex digest of ``str(i)``, the shared model string."""
    return CacheKey(hashlib.sha256(b"%d" % i).hexdigest(), model, f"chunk_{i % 100}")


def workload_vector(dim: int) -> Vector:
    """The vector ``[0, 1/dim, 2/dim, ...]`` of `dim` float32 values."""
    return np.arange(dim, dtype=np.float32) / np.float32(dim)


def budget_mb(entries: int, dim: int) -> float:
    """A memory budget (MB) so `entries` vectors of `dim` fit with room to spare."""
    return (entries * (dim * 4 + ENTRY_OVERHEAD_BYTES)) / MIB * 1.25 + 1.0


@dataclass
class ComparisonInputs:
    """Pre-built keys and vectors shared by every cache in a comparison."""

    dim: int
    put_pairs: list[tuple[CacheKey, Vector]]
    """New keys in random order, each with one of a few vectors."""
    hit_keys: list[CacheKey]
    """The same keys, in another random order."""
    miss_keys: list[CacheKey]
    """Keys never put, random order."""
    fill_pairs: list[tuple[CacheKey, Vector]]
    """Keys that fill the cache for the full-cache puts (capacity = len)."""
    vectors: list[Vector]
    """The 64 standard-normal vectors the pairs cycle through."""


def comparison_inputs(dim: int, ops: int) -> ComparisonInputs:
    """`ops` new keys with vectors, the same keys reordered for hits, `ops` keys
    for misses and `ops // 2` keys to fill a cache, all from one seeded Generator.
    Content hashes are 64 hex digits, as a SHA-256 hex digest is."""
    gen = rng()
    vectors = [gen.standard_normal(dim).astype(np.float32) for _ in range(64)]

    def keys(prefix: str, n: int) -> list[CacheKey]:
        return [
            CacheKey(f"{prefix}{int(i):064x}", MODEL, f"chunk_{int(i) % 100}")
            for i in gen.permutation(n)
        ]

    new_keys = keys("n", ops)
    hit_order = [new_keys[int(i)] for i in gen.permutation(ops)]
    fill = keys("f", max(ops // 2, 1))
    return ComparisonInputs(
        dim=dim,
        put_pairs=[(k, vectors[i % 64]) for i, k in enumerate(new_keys)],
        hit_keys=hit_order,
        miss_keys=keys("m", ops),
        fill_pairs=[(k, vectors[i % 64]) for i, k in enumerate(fill)],
        vectors=vectors,
    )


@dataclass(frozen=True)
class CheckConfig:
    """Sizes of one ``embcache check`` run; ``quick`` shrinks only the costly parts."""

    quick: bool = False
    dim: int = DIM
    scaling_rounds_tasks: int = 200
    scaling_rounds_threads: int = 60
    limit_budget_mb: float = 16.0
    limit_fill_factor: int = 16
    compare_ops: int = 10_000
    compare_repeats: int = 7
    compare_bytes_entries: int = 10_000

    @classmethod
    def make(cls, quick: bool, dim: int) -> CheckConfig:
        """Full-size or quick configuration at dimension `dim`."""
        if quick:
            return cls(
                quick=True,
                dim=dim,
                scaling_rounds_tasks=20,
                scaling_rounds_threads=8,
                limit_budget_mb=1.0,
                limit_fill_factor=48,
                compare_ops=1000,
                compare_repeats=3,
                compare_bytes_entries=1000,
            )
        return cls(quick=False, dim=dim)

    def as_dict(self) -> dict[str, Any]:
        """JSON form of the configuration."""
        return dict(self.__dict__)
