"""Redis values in the compact encodings (float16, bfloat16, int8) without a
server: the header names the encoding and dimension, both decoders (the C
reader of an MGET reply, embcache._core.MgetReader, and the Python
embcache.tier.wire.decode_values) decode every encoding to the float32 rows
embcache._core.decode_rows gives, in one batch of mixed encodings too, cut into
chunks anywhere, and count every corrupt value as a miss."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embcache._core import MGET_DONE, MGET_MORE, MgetReader, decode_rows, row_bytes
from embcache._core import encode_rows as encode_payloads
from embcache.tier.wire import (
    DTYPES,
    HEADER,
    decode_values,
    encode_rows,
    encode_storable,
    header_for,
)

STORAGES = ("float32", "float16", "bfloat16", "int8")
COMPACT = ("float16", "bfloat16", "int8")


def reply(values: list[bytes | None]) -> bytes:
    parts = [b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v) for v in values]
    return b"*%d\r\n" % len(values) + b"".join(parts)


def read(wire: bytes, n: int, dim: int | None, out: npt.NDArray[np.float32] | None = None,
         cuts: list[int] | None = None) -> MgetReader:  # fmt: skip
    reader = MgetReader(n, dim, out)
    bounds = [0, *sorted(set(c for c in (cuts or []) if 0 < c < len(wire))), len(wire)]
    status = MGET_MORE
    for a, b in zip(bounds, bounds[1:]):
        status = reader.feed(wire[a:b])
        if status != MGET_MORE:
            break
    assert status == MGET_DONE, status
    return reader


def stored(rows: npt.NDArray[np.float32], storage: str) -> npt.NDArray[np.float32]:
    """What a reader must return for `rows` written in `storage`."""
    return decode_rows(encode_payloads(rows, storage), storage, rows.shape[1])


def rows_of(n: int, dim: int, seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("dim", [1, 4, 17, 768])
def test_value_layout(storage: str, dim: int) -> None:
    rows = rows_of(3, dim)
    values = encode_rows(rows, storage)
    payloads = encode_payloads(rows, storage)
    for value, payload in zip(values, payloads):
        assert len(value) == HEADER.size + row_bytes(storage, dim)
        magic, version, dtype, reserved, got_dim = HEADER.unpack_from(value)
        assert (magic, version, dtype, reserved, got_dim) == (b"EMBC", 1, DTYPES[storage], 0, dim)
        assert value[HEADER.size :] == payload.tobytes()
    assert DTYPES == {"float32": 1, "float16": 2, "bfloat16": 3, "int8": 4}


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("dim", [1, 4, 9, 33])
@pytest.mark.parametrize("given_dim", [True, False])
def test_both_decoders_decode_each_encoding(storage: str, dim: int, given_dim: bool) -> None:
    rows = rows_of(5, dim, seed=dim)
    values: list[bytes | None] = list(encode_rows(rows, storage))
    values[2] = None
    want = stored(rows, storage)[[0, 1, 3, 4]]
    wire = reply(values)
    d = dim if given_dim else None
    for cuts in (None, list(range(0, len(wire), 3)), list(range(len(wire)))):
        r = read(wire, 5, d, cuts=cuts)
        assert r.index.tolist() == [0, 1, 3, 4] and r.errors == 0
        assert np.array_equal(r.rows, want)
    py = decode_values(values, d)
    assert py.index.tolist() == [0, 1, 3, 4] and py.errors == 0
    assert np.array_equal(py.rows, want)
    # into `out`: row i for value i, zeros for the absent one
    for decoded in (read(wire, 5, dim, out=np.zeros((5, dim), np.float32)).rows,
                    decode_values(values, dim, np.zeros((5, dim), np.float32)).rows):  # fmt: skip
        assert np.array_equal(decoded[[0, 1, 3, 4]], want) and not decoded[2].any()
    # one value alone
    one = decode_values(values[:1], d)
    assert np.array_equal(one.rows, want[:1]) and one.index.tolist() == [0]


def test_a_batch_of_mixed_encodings() -> None:
    """Caches of different storages share a tier: one reply holds them all."""
    dim = 4  # float16 and int8 values of dim 4 have the same length: the header decides
    rows = rows_of(8, dim, seed=3)
    values: list[bytes | None] = [
        encode_rows(rows[i : i + 1], STORAGES[i % 4])[0] for i in range(8)
    ]
    want = np.stack([stored(rows[i : i + 1], STORAGES[i % 4])[0] for i in range(8)])
    assert len(values[1]) == len(values[3])  # type: ignore[arg-type]
    wire = reply(values)
    for d in (dim, None):
        for cuts in (None, list(range(len(wire)))):
            r = read(wire, 8, d, cuts=cuts)
            assert r.index.tolist() == list(range(8)) and r.errors == 0
            assert np.array_equal(r.rows, want)
        py = decode_values(values, d)
        assert py.errors == 0 and np.array_equal(py.rows, want)


def corrupt_values(dim: int) -> dict[str, bytes]:
    f16 = encode_rows(np.ones((1, dim), np.float32), "float16")[0]
    bf16 = encode_rows(np.ones((1, dim), np.float32), "bfloat16")[0]
    i8 = encode_rows(np.ones((1, dim), np.float32), "int8")[0]
    return {
        "dtype 0": f16[:5] + b"\x00" + f16[6:],
        "dtype 5": i8[:5] + b"\x05" + i8[6:],
        "float16 header, float32 length": header_for(dim, "float16") + b"\0" * (4 * dim),
        "int8 header, float16 length": header_for(dim, "int8") + f16[12:],
        "float16 truncated": f16[:-1],
        "int8 too long": i8 + b"\0",
        "reserved set": bf16[:6] + b"\x00\x01" + bf16[8:],
        "dim lies": header_for(dim + 1, "float16") + f16[12:],
        "float16 infinity": f16[:-2] + b"\x00\x7c",
        "float16 nan": f16[:12] + b"\x01\xfe" + f16[14:],
        "bfloat16 infinity": bf16[:12] + b"\x80\xff" + bf16[14:],
        "bfloat16 nan": bf16[:-2] + b"\xc1\x7f",
        "int8 negative scale": i8[:12] + np.float32(-1.0).tobytes() + i8[16:],
        "int8 nan scale": i8[:12] + np.float32(np.nan).tobytes() + i8[16:],
        "int8 infinite scale": i8[:12] + np.float32(np.inf).tobytes() + i8[16:],
    }


@pytest.mark.parametrize("name", sorted(corrupt_values(6)))
@pytest.mark.parametrize("dim", [None, 6])
def test_every_corrupt_compact_value_is_a_counted_miss(name: str, dim: int | None) -> None:
    bad = corrupt_values(6)[name]
    ok = rows_of(1, 6, seed=11)
    good = encode_rows(ok, "int8")[0]
    values: list[bytes | None] = [bad, None, good, bad]
    wire = reply(values)
    for cuts in (None, list(range(len(wire)))):
        r = read(wire, 4, dim, cuts=cuts)
        assert r.index.tolist() == [2] and r.errors == 2, name
        assert np.array_equal(r.rows, stored(ok, "int8"))
        # rows of `out` for the corrupt values stay zero
        out = read(wire, 4, 6, out=np.zeros((4, 6), np.float32), cuts=cuts).rows
        assert not out[[0, 1, 3]].any() and np.array_equal(out[2], stored(ok, "int8")[0])
    py = decode_values(values, dim)
    assert py.index.tolist() == [2] and py.errors == 2
    assert np.array_equal(py.rows, stored(ok, "int8"))
    assert decode_values([bad], dim).errors == 1


def test_old_float32_values_still_decode_alongside() -> None:
    rows = rows_of(3, 5, seed=4)
    old = encode_rows(rows)  # the float32 values every earlier version wrote
    assert old == encode_rows(rows, "float32")
    assert all(v[5] == 1 and len(v) == 12 + 20 for v in old)
    values: list[bytes | None] = [old[0], encode_rows(rows[1:2], "bfloat16")[0], old[2]]
    want = np.stack([rows[0], stored(rows[1:2], "bfloat16")[0], rows[2]])
    assert np.array_equal(read(reply(values), 3, None).rows, want)
    assert np.array_equal(decode_values(values, None).rows, want)


def test_encode_storable_keeps_what_the_storage_can_hold() -> None:
    rows = np.ones((4, 3), dtype=np.float32)
    rows[1, 2] = 70000.0
    rows[3, 0] = -1e6
    kept, values = encode_storable(rows, "float16")
    assert kept == [0, 2] and values == encode_rows(rows[[0, 2]], "float16")
    kept, values = encode_storable(rows, "bfloat16")
    assert kept == [0, 1, 2, 3] and len(values) == 4


@st.composite
def mixed_batches(draw: st.DrawFn) -> tuple[int, list[bytes | None]]:
    dim = draw(st.integers(1, 12))
    n = draw(st.integers(1, 8))
    values: list[bytes | None] = []
    for _ in range(n):
        kind = draw(st.sampled_from(["absent", "corrupt", *STORAGES]))
        if kind == "absent":
            values.append(None)
        elif kind == "corrupt":
            values.append(draw(st.sampled_from(sorted(corrupt_values(dim).values()))))
        else:
            row = draw(st.lists(st.floats(-1e4, 1e4, width=32), min_size=dim, max_size=dim))
            values.append(encode_rows(np.asarray([row], dtype=np.float32), kind)[0])
    return dim, values


@settings(max_examples=200, deadline=None)
@given(mixed_batches(), st.data())
def test_c_reader_matches_the_python_decoder(
    batch: tuple[int, list[bytes | None]], data: st.DataObject
) -> None:
    dim, values = batch
    wire = reply(values)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    for d in (dim, None):
        r = read(wire, len(values), d, cuts=cuts)
        py = decode_values(values, d)
        assert r.index.tolist() == py.index.tolist()
        assert r.errors == py.errors
        if len(py.index):  # (with no hit, the width of the empty rows may differ)
            assert np.array_equal(r.rows.view(np.uint32), py.rows.view(np.uint32))
