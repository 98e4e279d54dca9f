"""The row codecs of the core (encode_rows / decode_rows / row_bytes) against a
slow numpy reference: numpy's own float16 conversion, bit arithmetic for
bfloat16, the int8 rule written out (scale absmax / 127, round half to even),
edge values, error bounds and idempotence as hypothesis properties, and the
errors for bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from embcache import (
    ArgumentTypeError,
    ArgumentValueError,
    DimensionMismatchError,
    InvalidVectorError,
)
from embcache._core import decode_rows, encode_rows, row_bytes

STORAGES = ("float32", "float16", "bfloat16", "int8")
F32 = np.float32
F32_MAX = float(np.finfo(np.float32).max)
BF16_MAX = float(np.uint32(0x7F7F0000).view(np.float32))  # 3.3895314e38

# --- the slow reference ------------------------------------------------------------------


def bits_f32(bits: int | list[int]) -> npt.NDArray[np.float32]:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def ref_bf16(x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """bfloat16 bits of finite float32 values, round to nearest even."""
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def ref_int8_scale(row: npt.NDArray[np.float32]) -> np.float32:
    scale = F32(np.abs(row).max()) / F32(127)
    with np.errstate(over="ignore"):
        if not np.isfinite(scale * F32(127)):  # one ulp less keeps 127 * scale finite
            scale = np.nextafter(scale, F32(0))
    return F32(scale)


def ref_encode(x: npt.NDArray[np.float32], storage: str) -> npt.NDArray[np.uint8]:
    n, dim = x.shape
    if storage == "float32":
        return x.astype("<f4").view(np.uint8).reshape(n, 4 * dim)
    if storage == "float16":
        return x.astype("<f2").view(np.uint8).reshape(n, 2 * dim)
    if storage == "bfloat16":
        return ref_bf16(x).astype("<u2").view(np.uint8).reshape(n, 2 * dim)
    out = np.zeros((n, dim + 4), dtype=np.uint8)
    for i, row in enumerate(x):
        scale = ref_int8_scale(row)
        out[i, :4] = np.frombuffer(np.asarray(scale, dtype="<f4").tobytes(), dtype=np.uint8)
        if scale != 0:
            q = np.clip(np.rint(row / scale), -127, 127)  # np.rint: half to even
            out[i, 4:] = q.astype(np.int8).view(np.uint8)
    return out


def ref_decode(e: npt.NDArray[np.uint8], storage: str, dim: int) -> npt.NDArray[np.float32]:
    n = e.shape[0]
    if storage == "float32":
        return e.copy().view("<f4").astype(np.float32).reshape(n, dim)
    if storage == "float16":
        return e.copy().view("<f2").astype(np.float32).reshape(n, dim)
    if storage == "bfloat16":
        h = e.copy().view("<u2").astype(np.uint32)
        return (h << 16).view(np.float32).reshape(n, dim)
    scale = e[:, :4].copy().view("<f4").astype(np.float32)
    return e[:, 4:].view(np.int8).astype(np.float32) * scale


def roundtrip(x: npt.NDArray[np.float32], storage: str) -> npt.NDArray[np.float32]:
    return decode_rows(encode_rows(x, storage), storage, x.shape[1])


def assert_matches_reference(x: npt.NDArray[np.float32], storage: str) -> None:
    e = encode_rows(x, storage)
    want = ref_encode(x, storage)
    assert e.dtype == np.uint8 and e.shape == want.shape and e.flags.c_contiguous
    bad = np.argwhere(e != want)
    assert bad.size == 0, f"{storage}: first differing byte at {bad[0]}"
    d = decode_rows(e, storage, x.shape[1])
    ref = ref_decode(e, storage, x.shape[1])
    assert d.dtype == np.float32 and d.shape == x.shape
    assert np.array_equal(d.view(np.uint32), ref.view(np.uint32)), storage


# --- row_bytes --------------------------------------------------------------------------


def test_row_bytes() -> None:
    assert [row_bytes(s, 768) for s in STORAGES] == [3072, 1536, 1536, 772]
    assert [row_bytes(s, 1) for s in STORAGES] == [4, 2, 2, 5]
    assert row_bytes("int8", np.int64(10)) == 14


@pytest.mark.parametrize(
    ("storage", "dim", "error", "text"),
    [
        ("float64", 4, ArgumentValueError, "'float32', 'float16', 'bfloat16', 'int8'"),
        ("Float16", 4, ArgumentValueError, "got 'Float16'"),
        (b"float16", 4, ArgumentTypeError, "storage must be a str"),
        (None, 4, ArgumentTypeError, "storage must be a str"),
        ("float16", 0, ArgumentValueError, "dim"),
        ("float16", -3, ArgumentValueError, "dim"),
        ("float16", True, ArgumentTypeError, "dim"),
        ("float16", 4.0, ArgumentTypeError, "dim"),
        ("int8", 1 << 40, ArgumentValueError, "dim"),
    ],
)
def test_row_bytes_rejects(storage: Any, dim: Any, error: type, text: str) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(")):
        row_bytes(storage, dim)


# --- against the reference ---------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("dim", [1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 384, 768, 769])
def test_random_rows_match_reference(storage: str, dim: int) -> None:
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((9, dim)).astype(np.float32)
    x[1] *= F32(1e-3)
    x[2] *= F32(1e4)
    x[3] = 0.0
    assert_matches_reference(x, storage)


def test_float16_over_random_bit_patterns() -> None:
    """float32 values of float16 range, sampled over their bit patterns, and a dense
    run through the float16 subnormals."""
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 0x477FE000, 400_000, dtype=np.uint32)
    tiny = np.arange(0x33000000, 0x38800000, 97, dtype=np.uint32)
    x = np.concatenate([bits, bits | 0x80000000, tiny]).view(np.float32).reshape(1, -1)
    assert_matches_reference(x, "float16")


def test_bfloat16_over_random_bit_patterns() -> None:
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 0x7F7F8000, 400_000, dtype=np.uint32)
    x = np.concatenate([bits, bits | 0x80000000]).view(np.float32).reshape(-1, 100)
    assert_matches_reference(x, "bfloat16")


@pytest.mark.parametrize("storage", ["float16", "bfloat16"])
def test_every_finite_half_value_decodes_exactly_and_reencodes(storage: str) -> None:
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    if storage == "float16":
        finite = np.isfinite(h.view(np.float16))
    else:
        finite = np.isfinite((h.astype(np.uint32) << 16).view(np.float32))
    h = h[finite]
    e = h.astype("<u2").view(np.uint8).reshape(1, -1)
    d = decode_rows(e, storage, h.size)
    assert np.array_equal(d.view(np.uint32), ref_decode(e, storage, h.size).view(np.uint32))
    assert np.array_equal(encode_rows(d, storage), e)


# --- edge values ---------------------------------------------------------------------------


def f16_bits(values: list[float]) -> list[int]:
    e = encode_rows(np.asarray([values], dtype=np.float32), "float16")
    return [int(v) for v in e.view("<u2")[0]]


def test_float16_edges() -> None:
    one = 1.0
    assert f16_bits([0.0, -0.0]) == [0x0000, 0x8000]
    # halfway between 1 and its neighbour: to even (down); a tie above an odd mantissa: up
    assert f16_bits([one + 2**-11, one + 3 * 2**-11, -(one + 2**-11)]) == [0x3C00, 0x3C02, 0xBC00]
    # just above / below a tie
    assert f16_bits([float(np.nextafter(F32(one + 2**-11), F32(2)))]) == [0x3C01]
    # subnormals: the smallest, half of it (a tie: to zero), 1.5 of it (a tie: to 2),
    # just above half (up to the smallest), and the largest subnormal rounding up to normal
    assert f16_bits([2**-24, 2**-25, 1.5 * 2**-24, float(np.nextafter(F32(2**-25), F32(1)))]) == [
        0x0001,
        0x0000,
        0x0002,
        0x0001,
    ]
    assert f16_bits([2**-14 - 2**-25, 2**-14 - 2**-24, 2**-14]) == [0x0400, 0x03FF, 0x0400]
    # float32 subnormals and tiny normals become signed zeros
    assert f16_bits([1e-45, -1e-45, 1e-30, -1e-30]) == [0x0000, 0x8000, 0x0000, 0x8000]
    # the largest float16, either sign
    assert f16_bits([65504.0, -65504.0, 65503.0, 65488.0]) == [0x7BFF, 0xFBFF, 0x7BFF, 0x7BFE]
    x = np.asarray([[0.0, -0.0, 2**-24, 65504.0, -65504.0]], dtype=np.float32)
    assert np.array_equal(roundtrip(x, "float16").view(np.uint32), x.view(np.uint32))


def test_bfloat16_edges() -> None:
    x = bits_f32(
        [
            0x3F808000,
            0x3F818000,
            0x3F808001,
            0x00000001,
            0x80000000,
            0x7F7F0000,
            0x7F7F7FFF,
            0xFF7F7FFF,
            0x00008000,
            0x00018000,
        ]
    ).reshape(1, -1)
    got = encode_rows(x, "bfloat16").view("<u2")[0]
    want = [0x3F80, 0x3F82, 0x3F81, 0x0000, 0x8000, 0x7F7F, 0x7F7F, 0xFF7F, 0x0000, 0x0002]
    assert [int(v) for v in got] == want
    assert float(roundtrip(x, "bfloat16")[0, 5]) == BF16_MAX


@pytest.mark.parametrize(
    ("storage", "value", "text"),
    [
        ("float16", 65505.0, "overflows float16"),
        ("float16", 65519.0, "overflows float16"),
        ("float16", 65520.0, "overflows float16"),
        ("float16", -1e6, "overflows float16"),
        ("bfloat16", float(bits_f32(0x7F7F8000)), "overflows bfloat16"),
        ("bfloat16", -F32_MAX, "overflows bfloat16"),
        ("float16", float("nan"), "is nan; embeddings must be finite"),
        ("bfloat16", float("-inf"), "is -inf; embeddings must be finite"),
        ("int8", float("inf"), "is inf; embeddings must be finite"),
        ("float32", float("nan"), "is nan; embeddings must be finite"),
    ],
)
def test_unstorable_value_named_by_position_and_storage(
    storage: str, value: float, text: str
) -> None:
    x = np.ones((3, 5), dtype=np.float32)
    x[1, 3] = value
    with pytest.raises(InvalidVectorError, match=r"^matrix\[1, 3\]") as info:
        encode_rows(x, storage)
    assert text in str(info.value)
    # in a batch long enough to be encoded without the GIL, the same
    big = np.ones((200, 768), dtype=np.float32)
    big[150, 700] = value
    with pytest.raises(InvalidVectorError, match=r"^matrix\[150, 700\]"):
        encode_rows(big, storage)


def test_storable_limits_pass() -> None:
    encode_rows(np.asarray([[65504.0, -65504.0]], dtype=np.float32), "float16")
    x = bits_f32([0x7F7F7FFF, 0xFF7F7FFF]).reshape(1, 2)
    assert float(roundtrip(x, "bfloat16")[0, 0]) == BF16_MAX
    for storage in ("float32", "int8"):
        x = np.asarray([[F32_MAX, -F32_MAX, 1.0]], dtype=np.float32)
        assert np.isfinite(roundtrip(x, storage)).all()


def test_int8_rounding_and_scale() -> None:
    # absmax 127: scale exactly 1, so x / scale is x and ties go to even
    x = np.asarray([[127.0, 2.5, 3.5, -2.5, -3.5, 0.5, 1.5, -0.5, 126.5]], dtype=np.float32)
    e = encode_rows(x, "int8")
    assert e[0, :4].tobytes() == np.asarray(1.0, dtype="<f4").tobytes()
    assert list(e[0, 4:].view(np.int8)) == [127, 2, 4, -2, -4, 0, 2, 0, 126]
    # the largest magnitude is +-127 whatever its sign
    x = np.asarray([[-3.0, 1.0, 0.0]], dtype=np.float32)
    e = encode_rows(x, "int8")
    assert list(e[0, 4:].view(np.int8)) == [-127, 42, 0]
    assert e[0, :4].view("<f4")[0] == F32(3.0) / F32(127)


def test_int8_zero_rows_are_exact() -> None:
    x = np.zeros((2, 16), dtype=np.float32)
    x[1] = -0.0
    e = encode_rows(x, "int8")
    assert not e.any()  # scale 0, every q 0
    assert np.array_equal(decode_rows(e, "int8", 16), np.zeros((2, 16), dtype=np.float32))


def test_int8_near_float32_max_decodes_finite() -> None:
    x = np.asarray([[F32_MAX, -F32_MAX / 2, 1.0]], dtype=np.float32)
    e = encode_rows(x, "int8")
    d = decode_rows(e, "int8", 3)
    assert np.isfinite(d).all() and d[0, 0] <= F32_MAX
    assert np.array_equal(encode_rows(d, "int8"), e)
    assert np.array_equal(e, ref_encode(x, "int8"))


# --- shapes and arguments ------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_no_rows(storage: str) -> None:
    e = encode_rows(np.empty((0, 12), dtype=np.float32), storage)
    assert e.shape == (0, row_bytes(storage, 12)) and e.dtype == np.uint8
    d = decode_rows(e, storage, 12)
    assert d.shape == (0, 12) and d.dtype == np.float32


@pytest.mark.parametrize("storage", STORAGES)
def test_decode_into_out(storage: str) -> None:
    x = np.random.default_rng(5).standard_normal((4, 10)).astype(np.float32)
    e = encode_rows(x, storage)
    out = np.full((4, 10), 7.0, dtype=np.float32)
    got = decode_rows(e, storage, 10, out=out)
    assert got is out
    assert np.array_equal(out, decode_rows(e, storage, 10))


@pytest.mark.parametrize("storage", STORAGES)
def test_long_batches_match_short_ones(storage: str) -> None:
    """A batch long enough to run without the GIL gives the bytes row by row calls give."""
    x = np.random.default_rng(6).standard_normal((120, 768)).astype(np.float32)
    e = encode_rows(x, storage)
    for i in (0, 57, 119):
        assert np.array_equal(e[i], encode_rows(x[i : i + 1], storage)[0])
    d = decode_rows(e, storage, 768)
    assert np.array_equal(d[57], decode_rows(e[57:58], storage, 768)[0])


def test_encode_rejects_bad_matrices() -> None:
    good = np.ones((2, 4), dtype=np.float32)
    cases: list[tuple[Any, type, str]] = [
        ([[1.0, 2.0]], ArgumentTypeError, "numpy.ndarray of float32, got builtins.list"),
        (good.astype(np.float64), ArgumentTypeError, "got dtype float64"),
        (good.astype(np.float16), ArgumentTypeError, "got dtype float16"),
        (good.astype(">f4"), ArgumentTypeError, "native-order float32"),
        (good[0], InvalidVectorError, r"must be 2-D \(rows, columns\), got shape \(4,\)"),
        (good[None], InvalidVectorError, "must be 2-D"),
        (np.ones((4, 4), dtype=np.float32)[:, ::2], ArgumentValueError, "C-contiguous"),
        (np.ones((4, 4), dtype=np.float32).T, ArgumentValueError, "C-contiguous"),
        (np.ones((3, 0), dtype=np.float32), InvalidVectorError, "rows are empty"),
    ]
    for matrix, error, text in cases:
        with pytest.raises(error, match=text):
            encode_rows(matrix, "float16")
    with pytest.raises(ArgumentValueError, match="storage must be one of"):
        encode_rows(good, "fp16")


def test_decode_rejects_bad_arguments() -> None:
    e = encode_rows(np.ones((2, 4), dtype=np.float32), "float16")
    with pytest.raises(
        DimensionMismatchError, match="encoded rows have 8 bytes, but float16 rows of dim 5 have 10"
    ):
        decode_rows(e, "float16", 5)
    with pytest.raises(DimensionMismatchError, match="int8 rows of dim 3 have 7"):
        decode_rows(e, "int8", 3)
    with pytest.raises(ArgumentTypeError, match="uint8"):
        decode_rows(e.view(np.int8), "float16", 4)
    with pytest.raises(ArgumentTypeError, match="numpy.ndarray of uint8"):
        decode_rows(e.tobytes(), "float16", 4)  # type: ignore[arg-type]
    with pytest.raises(ArgumentValueError, match="C-contiguous"):
        decode_rows(np.ones((2, 16), dtype=np.uint8)[:, ::2], "float16", 4)
    with pytest.raises(DimensionMismatchError, match=r"out has shape \(2, 5\)"):
        decode_rows(e, "float16", 4, out=np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(DimensionMismatchError, match=r"out has shape \(3, 4\)"):
        decode_rows(e, "float16", 4, out=np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ArgumentTypeError, match="got dtype float64"):
        decode_rows(e, "float16", 4, out=np.zeros((2, 4)))  # type: ignore[arg-type]
    ro = np.zeros((2, 4), dtype=np.float32)
    ro.flags.writeable = False
    with pytest.raises(ArgumentValueError, match="writable"):
        decode_rows(e, "float16", 4, out=ro)
    assert not ro.any()


@pytest.mark.parametrize(
    ("storage", "row"),
    [
        ("float16", [0x00, 0x3C, 0x00, 0x7C]),  # 1.0, +inf
        ("float16", [0x01, 0xFE, 0x00, 0x00]),  # a NaN
        ("bfloat16", [0x80, 0x7F, 0x00, 0x00]),  # +inf
        ("bfloat16", [0x00, 0x00, 0xC1, 0xFF]),  # a NaN
        ("int8", [0x00, 0x00, 0x80, 0xBF, 1, 2]),  # scale -1.0
        ("int8", [0x00, 0x00, 0xC0, 0x7F, 1, 2]),  # scale NaN
        ("int8", [0x00, 0x00, 0x80, 0x7F, 0, 0]),  # scale +inf
        ("float32", [0x00, 0x00, 0xC0, 0x7F, 0, 0, 0, 0]),  # NaN
    ],
)
def test_decode_rejects_rows_no_encoder_writes(storage: str, row: list[int]) -> None:
    good = encode_rows(np.ones((1, 2), dtype=np.float32), storage)
    e = np.vstack([good, np.asarray([row], dtype=np.uint8)])
    with pytest.raises(InvalidVectorError, match=rf"encoded\[1\] is not a {storage} row"):
        decode_rows(e, storage, 2)


# --- properties -----------------------------------------------------------------------------


def finite_f32(limit: float, subnormal: bool = True) -> st.SearchStrategy[float]:
    return st.floats(
        -limit, limit, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=subnormal
    )


def rows_of(elements: st.SearchStrategy[float]) -> st.SearchStrategy[npt.NDArray[np.float32]]:
    shape = st.tuples(st.integers(1, 4), st.integers(1, 40))
    return hnp.arrays(np.float32, shape, elements=elements)


def binade_ulp(x: npt.NDArray[np.float32], min_exp: int, mant_bits: int) -> npt.NDArray[np.float64]:
    """The spacing of a binary format (`mant_bits` stored mantissa bits, normal
    exponents down to `min_exp`) in the binade of each |x|."""
    _, exp = np.frexp(np.abs(x.astype(np.float64)))
    ulp: npt.NDArray[np.float64] = np.ldexp(1.0, np.maximum(exp - 1, min_exp) - mant_bits)
    return ulp


@settings(max_examples=300, deadline=None)
@given(rows_of(finite_f32(65504.0)))
def test_float16_within_half_an_ulp(x: npt.NDArray[np.float32]) -> None:
    d = roundtrip(x, "float16")
    err = np.abs(d.astype(np.float64) - x.astype(np.float64))
    assert (err <= binade_ulp(x, -14, 10) / 2).all()
    assert np.array_equal(
        d.view(np.uint32), x.astype(np.float16).astype(np.float32).view(np.uint32)
    )


@settings(max_examples=300, deadline=None)
@given(rows_of(finite_f32(BF16_MAX)))
def test_bfloat16_within_half_an_ulp(x: npt.NDArray[np.float32]) -> None:
    d = roundtrip(x, "bfloat16")
    err = np.abs(d.astype(np.float64) - x.astype(np.float64))
    assert (err <= binade_ulp(x, -126, 7) / 2).all()


@settings(max_examples=300, deadline=None)
@given(rows_of(finite_f32(F32_MAX)))
def test_int8_within_half_a_scale(x: npt.NDArray[np.float32]) -> None:
    e = encode_rows(x, "int8")
    d = decode_rows(e, "int8", x.shape[1])
    scale = e[:, :4].copy().view("<f4").astype(np.float64)
    absmax = np.abs(x.astype(np.float64)).max(axis=1, keepdims=True)
    # scale / 2 from rounding to the grid, plus float32 rounding of x / scale and
    # of q * scale (and of a subnormal scale itself)
    bound = scale / 2 + scale * 2.0**-14 + absmax * 2.0**-23 + 2.0**-142
    assert (np.abs(d.astype(np.float64) - x.astype(np.float64)) <= bound).all()
    assert np.isfinite(d).all()
    zero = ~x.any(axis=1)
    assert not d[zero].any() and not e[zero].any()


@pytest.mark.parametrize("storage", STORAGES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_encoding_a_decoded_row_gives_the_same_bytes(storage: str, data: st.DataObject) -> None:
    limit = {"float16": 65504.0, "bfloat16": BF16_MAX}.get(storage, F32_MAX)
    x = data.draw(rows_of(finite_f32(limit)))
    e = encode_rows(x, storage)
    assert np.array_equal(e, ref_encode(x, storage))
    d = decode_rows(e, storage, x.shape[1])
    assert np.array_equal(encode_rows(d, storage), e)
    assert np.array_equal(decode_rows(encode_rows(d, storage), storage, x.shape[1]), d)
