"""The shared tier's wire format: how a vector is written as a Redis value, how
a CacheKey names it, and the validation of what comes back.

A value is a 12-byte header and the payload::

    offset  size  field
    0       4     magic      b"EMBC"
    4       1     version    1
    5       1     dtype      the row encoding (the storage the writing tier keeps):
                             1 = float32, 2 = float16, 3 = bfloat16, 4 = int8
    6       2     reserved   0 (u16 LE)
    8       4     dim        >= 1 (u32 LE)
    12      ...   payload    the row, as embcache._core.encode_rows writes it:
                             float32: 4*dim bytes, dim float32 little-endian;
                             float16 / bfloat16: 2*dim bytes, little-endian;
                             int8: dim + 4 bytes, a float32 scale (LE), dim int8

A reader decodes whatever encoding a value names into float32 rows, so tiers
of caches with different storages share values (a cache then stores the rows
in its own storage). Readers that predate the compact encodings know only
dtype 1: to them a compact value is invalid, a miss.

A Redis key is ``prefix ":" model ":" digest``: `model` is the key's
model_version, UTF-8, with every byte outside ``[A-Za-z0-9._-]`` written as
``%XX`` (so it holds no ``:``, no glob character and no ``{`` or ``}`` that
would make a cluster hash tag), and `digest` the 64 lowercase hex digits of
``CacheKey.digest`` (which already covers every field of the key). Reading a
key from its right end recovers digest, model and prefix, so two different
(prefix, key) pairs never share a Redis key, and every vector of one model
under one prefix matches ``prefix ":" model ":"`` followed by exactly 64
characters (the pattern ``drop_model`` scans for).

Nothing here talks to Redis; embcache.redis does.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from embcache._core import CacheKey, decode_rows, row_bytes
from embcache._core import encode_rows as encode_payloads
from embcache.errors import ArgumentTypeError, ArgumentValueError, InvalidVectorError

__all__ = [
    "DIGEST_HEX",
    "HEADER",
    "PREFIX_FORBIDDEN",
    "MAGIC",
    "VERSION",
    "DTYPES",
    "Decoded",
    "check_prefix",
    "decode_values",
    "encode_rows",
    "encode_storable",
    "header_for",
    "key_prefix",
    "mget_command",
    "model_pattern",
    "quote_model",
    "redis_key",
]

MAGIC = b"EMBC"
VERSION = 1
DTYPE_FLOAT32_LE = 1
DTYPES = {"float32": 1, "float16": 2, "bfloat16": 3, "int8": 4}
"""The header's dtype byte of each storage."""
_STORAGE_OF = {code: storage for storage, code in DTYPES.items()}
HEADER = struct.Struct("<4sBBHI")
"""magic, version, dtype, reserved, dim."""
DIGEST_HEX = 64

PREFIX_FORBIDDEN = frozenset("{}*?[]\\")
"""Characters a key prefix may not hold (hash tags and glob characters)."""
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_LE_F32 = np.dtype("<f4")


def header_for(dim: int, storage: str = "float32") -> bytes:
    """The 12-byte header of a value of dimension `dim` encoded for `storage`."""
    return HEADER.pack(MAGIC, VERSION, DTYPES[storage], 0, dim)


def value_length(dim: int, storage: str) -> int:
    """Bytes of a whole value (header and payload) of `dim` values in `storage`."""
    return HEADER.size + int(row_bytes(storage, dim))


def check_prefix(prefix: object) -> bytes:
    """`prefix` as the bytes every key starts with: a non-empty printable ASCII
    str without spaces or PREFIX_FORBIDDEN characters (ArgumentTypeError /
    ArgumentValueError otherwise)."""
    if not isinstance(prefix, str):
        raise ArgumentTypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if not prefix:
        raise ArgumentValueError("prefix must be a non-empty str")
    bad = [c for c in prefix if c in PREFIX_FORBIDDEN or not ("!" <= c <= "~")]
    if bad:
        raise ArgumentValueError(
            f"prefix must be printable ASCII without spaces, braces or glob characters "
            f"({''.join(sorted(PREFIX_FORBIDDEN))}); {prefix!r} has {bad[0]!r}"
        )
    return prefix.encode("ascii")


def quote_model(model_version: str) -> bytes:
    """`model_version` as it appears in a Redis key (see the module docstring)."""
    raw = model_version.encode("utf-8", "surrogatepass")
    if all(b in _SAFE for b in raw):
        return raw
    return b"".join(bytes((b,)) if b in _SAFE else b"%%%02X" % b for b in raw)


def key_prefix(prefix: bytes, model_version: str) -> bytes:
    """``prefix ":" model ":"``: what every Redis key of that model starts with."""
    return prefix + b":" + quote_model(model_version) + b":"


def model_pattern(prefix: bytes, model_version: str) -> bytes:
    """The SCAN MATCH pattern of exactly that model's keys (prefix bytes glob-escaped)."""
    escaped = b"".join(b"\\" + bytes((b,)) if b in b"*?[]\\" else bytes((b,)) for b in prefix)
    return escaped + b":" + quote_model(model_version) + b":" + b"?" * DIGEST_HEX


def redis_key(prefix: bytes, key: CacheKey) -> bytes:
    """The Redis key of `key` under `prefix`."""
    return key_prefix(prefix, key.model_version) + key.digest.hex().encode("ascii")


def mget_command(prefix: bytes, keys: Sequence[CacheKey]) -> bytes:
    """``MGET`` of the Redis keys of `keys` under `prefix`, as RESP bytes ready
    to send (what redis-py's pack_command would make of the redis_key of each,
    made without a Python object per key when the keys share one model)."""
    n = len(keys)
    models = [k.model_version for k in keys]
    if n and models.count(models[0]) == n:
        head = key_prefix(prefix, models[0])
        length = len(head) + DIGEST_HEX
        lead = b"$%d\r\n%s" % (length, head)
        hexed = binascii.hexlify(b"".join([k.digest for k in keys]))
        record = np.empty((n, len(lead) + DIGEST_HEX + 2), dtype=np.uint8)
        record[:, : len(lead)] = np.frombuffer(lead, dtype=np.uint8)
        record[:, len(lead) : -2] = np.frombuffer(hexed, dtype=np.uint8).reshape(n, DIGEST_HEX)
        record[:, -2:] = np.frombuffer(b"\r\n", dtype=np.uint8)
        body = record.tobytes()
    else:
        rkeys = [redis_key(prefix, k) for k in keys]
        body = b"".join([b"$%d\r\n%s\r\n" % (len(r), r) for r in rkeys])
    return b"*%d\r\n$4\r\nMGET\r\n" % (n + 1) + body


def encode_rows(matrix: npt.NDArray[np.float32], storage: str = "float32") -> list[bytes]:
    """One value per row of a float32 (m, dim) `matrix`, encoded for `storage`
    (InvalidVectorError, from embcache._core.encode_rows, for a value it cannot
    hold)."""
    m, dim = matrix.shape
    length = value_length(dim, storage) if storage != "float32" else HEADER.size + 4 * dim
    buf = np.empty((m, length), dtype=np.uint8)
    buf[:, : HEADER.size] = np.frombuffer(header_for(dim, storage), dtype=np.uint8)
    if storage == "float32":
        buf[:, HEADER.size :] = np.ascontiguousarray(matrix, dtype=_LE_F32).view(np.uint8)
    else:
        buf[:, HEADER.size :] = encode_payloads(np.ascontiguousarray(matrix), storage)
    raw = buf.tobytes()
    return [raw[i * length : (i + 1) * length] for i in range(m)]


def encode_storable(matrix: npt.NDArray[np.float32], storage: str) -> tuple[list[int], list[bytes]]:
    """The rows of `matrix` that `storage` can hold, each encoded alone (see
    encode_rows): their positions and their values."""
    kept: list[int] = []
    values: list[bytes] = []
    for i in range(len(matrix)):
        try:
            values += encode_rows(matrix[i : i + 1], storage)
        except InvalidVectorError:
            continue
        kept.append(i)
    return kept, values


class Decoded:
    """Values read for a batch of keys, validated: ``rows`` (k, dim), a new
    C-contiguous float32 array, row r holding value ``index[r]`` (ascending
    positions in the batch); ``errors`` counts the
    values present but invalid (foreign bytes, a wrong length or dimension, a
    non-finite element), which are misses like absent ones."""

    __slots__ = ("rows", "index", "errors")

    def __init__(
        self, rows: npt.NDArray[np.float32], index: npt.NDArray[np.intp], errors: int
    ) -> None:
        self.rows = rows
        self.index = index
        self.errors = errors


_NO_INDEX = np.empty(0, dtype=np.intp)
_ONE_INDEX = np.zeros(1, dtype=np.intp)
_ONE_INDEX.flags.writeable = False
_NO_INDEX.flags.writeable = False


def _header_of(value: bytes) -> tuple[int, str]:
    """The dimension and storage a value declares, if its header and length are
    right; else (0, "")."""
    if len(value) < HEADER.size + 2:
        return 0, ""
    magic, version, dtype, reserved, dim = HEADER.unpack_from(value)
    storage = _STORAGE_OF.get(dtype, "")
    if magic != MAGIC or version != VERSION or not storage or reserved != 0 or dim < 1:
        return 0, ""
    if len(value) != value_length(dim, storage):
        return 0, ""
    return int(dim), storage


def _dim_of(value: bytes) -> int:
    """The dimension a value declares, if its header and length are right; else 0."""
    return _header_of(value)[0]


def _payload_rows(
    block: npt.NDArray[np.uint8], storage: str, dim: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """The rows of whole values (k, length) of one storage and dimension, decoded,
    and which are valid (a row that decodes to a value that is not finite is
    not: it is left zero)."""
    payload = np.ascontiguousarray(block[:, HEADER.size :])
    k = len(payload)
    try:
        return decode_rows(payload, storage, dim), np.ones(k, dtype=np.bool_)
    except InvalidVectorError:  # a corrupt row among them: row by row
        rows = np.zeros((k, dim), dtype=np.float32)
        ok = np.zeros(k, dtype=np.bool_)
        for j in range(k):
            try:
                decode_rows(payload[j : j + 1], storage, dim, out=rows[j : j + 1])
            except InvalidVectorError:
                rows[j] = 0.0
            else:
                ok[j] = True
        return rows, ok


def _decode_mixed(values: Sequence[object], dim: int) -> Decoded:
    """decode_values for a batch holding values of any encoding: grouped by
    length, each group's headers compared per storage and its payloads decoded."""
    lengths = {value_length(dim, storage) for storage in DTYPES}
    groups: dict[int, list[int]] = {}
    present = 0
    for i, value in enumerate(values):
        if value is not None:
            present += 1
            if type(value) is bytes and len(value) in lengths:
                groups.setdefault(len(value), []).append(i)
    rows = np.zeros((len(values), dim), dtype=np.float32)
    ok = np.zeros(len(values), dtype=np.bool_)
    for length, positions in groups.items():
        raw = np.frombuffer(b"".join([values[i] for i in positions]), dtype=np.uint8)  # type: ignore[misc]
        raw = raw.reshape(len(positions), length)
        where = np.asarray(positions, dtype=np.intp)
        for storage in DTYPES:
            if value_length(dim, storage) != length:
                continue
            header = np.frombuffer(header_for(dim, storage), dtype=np.uint8)
            match = (raw[:, : HEADER.size] == header).all(axis=1)
            if match.any():
                got, valid = _payload_rows(raw[match], storage, dim)
                rows[where[match]] = got
                ok[where[match]] = valid
    index = np.flatnonzero(ok)
    return Decoded(rows[index] if len(index) < len(values) else rows, index, present - len(index))


def _none(dim: int | None, errors: int) -> Decoded:
    return Decoded(np.empty((0, dim or 0), dtype=np.float32), _NO_INDEX, errors)


def _decode_one(value: object, dim: int | None) -> Decoded:
    """decode_values for one value, without the vectorised machinery."""
    if value is None:
        return _none(dim, 0)
    if type(value) is not bytes:
        return _none(dim, 1)
    d, storage = _header_of(value)
    if not d or (dim is not None and d != dim):
        return _none(dim, 1)
    if storage == "float32":
        row = np.frombuffer(value, dtype=_LE_F32, offset=HEADER.size).astype(np.float32)
        if not np.isfinite(row).all():
            return _none(dim, 1)
        return Decoded(row.reshape(1, d), _ONE_INDEX, 0)
    rows, ok = _payload_rows(np.frombuffer(value, dtype=np.uint8).reshape(1, -1), storage, d)
    return Decoded(rows, _ONE_INDEX, 0) if ok[0] else _none(dim, 1)


def _candidates(values: Sequence[object], length: int) -> tuple[list[int] | None, int]:
    """The positions of the values that are bytes of `length` (None: all of
    them), and how many present values are not."""
    try:
        if set(map(len, values)) == {length}:  # type: ignore[arg-type]
            return None, 0
    except TypeError:  # a None (absent key) among them
        pass
    good: list[int] = []
    present = 0
    for i, value in enumerate(values):
        if value is not None:
            present += 1
            if type(value) is bytes and len(value) == length:
                good.append(i)
    return good, present - len(good)


def decode_values(
    values: Sequence[object], dim: int | None, out: npt.NDArray[np.float32] | None = None
) -> Decoded:
    """Validate `values` (bytes, or None for an absent key, as Redis answered) for
    a batch of dimension `dim` (None: the dimension of the first valid value).

    The values of the batch's length are joined, their headers compared and
    their payloads copied into one new, native float32 matrix (``rows``, owned
    by the caller) and checked for finiteness, all in vectorised passes; values
    of a compact encoding (float16, bfloat16, int8; their header says which) are
    decoded to float32 by embcache._core.decode_rows, per encoding; every other
    value is invalid. Never raises for any value contents.

    With `out` (a zero-filled, C-contiguous float32 (len(values), dim) array),
    valid value i is written to ``out[i]`` instead, the rows of the others stay
    zero, and ``rows`` is `out` itself (row i for value i)."""
    if out is not None:
        return _decode_into(values, dim, out)
    if len(values) == 1:
        return _decode_one(values[0], dim)
    if dim is None:
        for value in values:
            if type(value) is bytes:
                d = _dim_of(value)
                if d:
                    dim = d
                    break
    if dim is None:
        return _none(None, sum(value is not None for value in values))
    length = HEADER.size + 4 * dim
    good, errors = _candidates(values, length)
    if errors:  # values of another length: maybe of a compact encoding
        return _decode_mixed(values, dim)
    chunks = values if good is None else [values[i] for i in good]
    try:
        joined = b"".join(chunks)  # type: ignore[arg-type]
    except TypeError:  # a non-bytes value of the right length (never from redis-py)
        good = [
            i for i in (range(len(values)) if good is None else good) if type(values[i]) is bytes
        ]
        errors += len(chunks) - len(good)
        chunks = [values[i] for i in good]
        joined = b"".join(chunks)  # type: ignore[arg-type]
    k = len(chunks)
    if not k:
        return _none(dim, errors)
    raw = np.frombuffer(joined, dtype=np.uint8).reshape(k, length)
    ok = (raw[:, : HEADER.size] == np.frombuffer(header_for(dim), dtype=np.uint8)).all(axis=1)
    rows = np.empty((k, dim), dtype=np.float32)
    np.copyto(rows, raw[:, HEADER.size :].view(_LE_F32))
    ok &= np.isfinite(rows).all(axis=1)
    index = np.arange(k, dtype=np.intp) if good is None else np.asarray(good, dtype=np.intp)
    if not ok.all():
        errors += int(k - ok.sum())
        rows, index = rows[ok], index[ok]
    return Decoded(rows, index, errors)


def _decode_into(
    values: Sequence[object], dim: int | None, out: npt.NDArray[np.float32]
) -> Decoded:
    """decode_values with `out`: when every value is present and of the right
    length (the usual batch), straight into `out`, with no matrix in between."""
    length = HEADER.size + 4 * int(out.shape[1])
    good, errors = (None, 0) if len(values) == 1 else _candidates(values, length)
    if good is None and len(values) > 1:
        try:
            joined = b"".join(values)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            raw = np.frombuffer(joined, dtype=np.uint8).reshape(len(values), length)
            header = np.frombuffer(header_for(int(out.shape[1])), dtype=np.uint8)
            ok = (raw[:, : HEADER.size] == header).all(axis=1)
            np.copyto(out, raw[:, HEADER.size :].view(_LE_F32))
            ok &= np.isfinite(out).all(axis=1)
            if ok.all():
                return Decoded(out, np.arange(len(values), dtype=np.intp), 0)
            bad = ~ok
            out[bad] = 0.0
            return Decoded(out, np.flatnonzero(ok), int(bad.sum()))
    decoded = decode_values(values, dim)
    out[decoded.index] = decoded.rows
    return Decoded(out, decoded.index, decoded.errors)
