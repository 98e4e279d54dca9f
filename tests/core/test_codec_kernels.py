"""The codec kernels chosen per CPU (AVX2 + F16C, AVX-512F) give bit for bit
what the portable C kernels give, over many random and edge rows of every length
class (whole vector steps, tails, rows shorter than one step); and the portable
kernels can be forced."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from embcache import ArgumentValueError, InvalidVectorError
from embcache._core import _codec_kernels, _force_portable_kernels, decode_rows, encode_rows

STORAGES = ("float32", "float16", "bfloat16", "int8")
LIMITS = {"float16": 65504.0, "bfloat16": 3.3895314e38}
KERNELS = ("portable", "avx2", "avx512")


def cpu_kernels() -> list[str]:
    """The kernel sets this CPU runs, from portable up to its best."""
    best = _codec_kernels("avx512")
    return list(KERNELS[: KERNELS.index(best) + 1])


@pytest.fixture(autouse=True)
def restore_kernels() -> Iterator[None]:
    yield
    _codec_kernels("avx512")
    _force_portable_kernels(False)


def with_kernels(name: str, fn, *args):  # type: ignore[no-untyped-def]
    assert _codec_kernels(name) == name
    try:
        return fn(*args)
    finally:
        _codec_kernels("avx512")


def edge_rows(storage: str, dim: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Rows of `dim` values that the storage can hold, mixing ordinary values with
    ties, subnormals, signed zeros, the storage's largest values and random bit
    patterns."""
    limit = LIMITS.get(storage, float(np.finfo(np.float32).max))
    specials = np.asarray(
        [
            0.0,
            -0.0,
            1.0,
            -1.0,
            1 + 2**-11,
            1 + 3 * 2**-11,
            2**-24,
            2**-25,
            1.5 * 2**-24,
            2**-14 - 2**-25,
            1e-45,
            -1e-45,
            1e-40,
            65504.0,
            -65504.0,
            65503.5,
            2.5,
            -3.5,
            0.5,
            float(np.uint32(0x3F808000).view(np.float32)),
            float(np.uint32(0x00008000).view(np.float32)),
            3.3895314e38,
            -3.3895314e38,
            float(np.finfo(np.float32).max),
        ],
        dtype=np.float64,
    )
    specials = specials[np.abs(specials) <= limit].astype(np.float32)
    bits = rng.integers(0, 1 << 32, (6, dim), dtype=np.uint64).astype(np.uint32)
    random_bits = bits.view(np.float32)
    random_bits = np.where(np.abs(random_bits) <= limit, random_bits, np.float32(1.5))
    normal = rng.standard_normal((6, dim)).astype(np.float32)
    rows = [
        normal[0],
        normal[1] * np.float32(1e-6),
        normal[2] * np.float32(100.0),
        np.zeros(dim, dtype=np.float32),
        np.full(dim, -0.0, dtype=np.float32),
        rng.choice(specials, dim).astype(np.float32),
        rng.choice(specials, dim).astype(np.float32),
        *random_bits,
    ]
    # ties of int8 at every position: x / scale = k + 0.5 exactly (scale 1)
    tie = (rng.integers(-126, 126, dim) + 0.5).astype(np.float32)
    tie[rng.integers(0, dim)] = 127.0
    rows.append(tie)
    # the largest magnitude in the tail, then in the last full vector step
    for where in (dim - 1, max(0, (dim // 16) * 16 - 1)):
        row = normal[3].copy()
        row[where] = np.float32(min(limit, 1e4))
        rows.append(row)
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)


DIMS = [1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33, 47, 48, 63, 64, 65, 100, 384, 768, 1023]


@pytest.mark.parametrize("storage", STORAGES)
def test_cpu_kernels_match_portable_bit_for_bit(storage: str) -> None:
    rng = np.random.default_rng(2024)
    kernels = cpu_kernels()
    for dim in DIMS:
        x = edge_rows(storage, dim, rng)
        want = with_kernels("portable", encode_rows, x, storage)
        back = with_kernels("portable", decode_rows, want, storage, dim)
        for name in kernels[1:]:
            got = with_kernels(name, encode_rows, x, storage)
            bad = np.argwhere(got != want)
            assert bad.size == 0, f"{name} {storage} dim {dim}: first differing byte {bad[0]}"
            d = with_kernels(name, decode_rows, want, storage, dim)
            assert np.array_equal(d.view(np.uint32), back.view(np.uint32)), (name, storage, dim)


@pytest.mark.parametrize("storage", ["float16", "bfloat16", "int8"])
def test_cpu_kernels_decode_arbitrary_bytes_like_portable(storage: str) -> None:
    """Random payloads (every int8 value, every finite half pattern) decode alike."""
    rng = np.random.default_rng(7)
    kernels = cpu_kernels()
    for dim in (5, 16, 33, 768):
        width = dim + 4 if storage == "int8" else 2 * dim
        e = rng.integers(0, 256, (50, width), dtype=np.uint8)
        if storage == "int8":
            e[:, :4] = rng.uniform(0, 1e3, (50, 1)).astype("<f4").view(np.uint8)
        else:
            h = e.view("<u2")
            top = 0x7C00 if storage == "float16" else 0x7F80
            h[(h & top) == top] &= 0x3FFF  # no infinity or NaN
        want = with_kernels("portable", decode_rows, e, storage, dim)
        for name in kernels[1:]:
            got = with_kernels(name, decode_rows, e, storage, dim)
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (name, dim)


@pytest.mark.parametrize("storage", ["float32", "float16", "bfloat16", "int8"])
def test_cpu_kernels_find_the_same_unstorable_value(storage: str) -> None:
    bad_values = [np.nan, np.inf, -np.inf]
    if storage == "float16":
        bad_values += [65505.0, -65520.0, 1e10]
    if storage == "bfloat16":
        bad_values += [float(np.uint32(0x7F7F8000).view(np.float32)), -3.4e38]
    for dim in (1, 8, 9, 16, 17, 40, 768):
        for where in sorted({0, dim // 2, dim - 1}):
            for value in bad_values:
                x = np.ones((2, dim), dtype=np.float32)
                x[1, where] = value
                x[1, dim - 1 :] = value if where == dim - 1 else 1.0
                messages = []
                for name in cpu_kernels():
                    with pytest.raises(InvalidVectorError) as info:
                        with_kernels(name, encode_rows, x, storage)
                    messages.append(str(info.value))
                assert messages[0].startswith(f"matrix[1, {where}]")
                assert len(set(messages)) == 1, messages


def test_force_portable_kernels() -> None:
    best = cpu_kernels()[-1]
    assert _force_portable_kernels(True) is False
    assert _codec_kernels() == "portable"
    assert _force_portable_kernels(True) is True
    assert _force_portable_kernels(False) is True
    assert _codec_kernels() == best
    with pytest.raises(ArgumentValueError, match="limit must be one of"):
        _codec_kernels("sse2")


def test_a_long_batch_is_identical_under_every_kernel_set() -> None:
    x = np.random.default_rng(9).standard_normal((300, 768)).astype(np.float32)
    for storage in STORAGES:
        results = [with_kernels(name, encode_rows, x, storage) for name in cpu_kernels()]
        assert all(np.array_equal(r, results[0]) for r in results[1:]), storage
