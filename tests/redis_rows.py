"""Rows for the Redis tier's read-path tests: finite float32 values of arbitrary
bit patterns, so a byte moved, dropped or reordered anywhere on the way from
Redis into the matrix changes what the test compares."""

from __future__ import annotations

import numpy as np


def bit_rows(n: int, dim: int, seed: int = 5) -> np.ndarray:
    """(n, dim) finite float32 rows of every bit-pattern class: random bits
    (non-finite ones made -0.0), and in row 0 a subnormal, the most negative
    finite value, +0.0 and -0.0."""
    bits = np.random.default_rng(seed).integers(0, 2**32, (n, dim), dtype=np.uint64)
    rows = bits.astype(np.uint32).view(np.float32)
    rows[~np.isfinite(rows)] = -0.0
    rows[0, :4] = [np.float32(1e-45), np.float32(-3.4028235e38), np.float32(0.0), -0.0]
    return rows
