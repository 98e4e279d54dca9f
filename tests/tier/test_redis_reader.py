"""embcache._core.MgetReader, the C reader of a reply to MGET, without a server:
every malformed value and reply, every way of cutting a reply into chunks, and
a property test against embcache.tier.wire.decode_values (the Python decoder
of the values redis-py would have returned)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import by_profile
from hypothesis import given, settings
from hypothesis import strategies as st

from embcache import CacheKey
from embcache._core import MGET_DONE, MGET_MORE, MGET_PROTOCOL, MGET_REPLY_ERROR, MgetReader
from embcache.errors import ArgumentValueError
from embcache.tier.wire import decode_values, encode_rows, header_for, mget_command, redis_key

DIM = 4


class Other:
    """An element redis-py would return as something other than bytes or None."""

    def __init__(self, wire: bytes) -> None:
        self.wire = wire

    def __repr__(self) -> str:
        return f"Other({self.wire!r})"


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def element(value: bytes | None | Other) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, Other):
        return value.wire
    return bulk(value)


def reply(values: list[bytes | None | Other]) -> bytes:
    return b"*%d\r\n" % len(values) + b"".join(element(v) for v in values)


def read(wire: bytes, n: int, dim: int | None, out: np.ndarray | None = None,
         cuts: list[int] | None = None) -> MgetReader:  # fmt: skip
    """`wire` fed to a new reader in the pieces `cuts` makes (whole by default)."""
    reader = MgetReader(n, dim, out)
    bounds = [0, *sorted(set(c for c in (cuts or []) if 0 < c < len(wire))), len(wire)]
    status = MGET_MORE
    for a, b in zip(bounds, bounds[1:]):
        status = reader.feed(wire[a:b])
        if status != MGET_MORE:
            break
    assert status == MGET_DONE, status
    return reader


def good(value: float = 1.0, dim: int = DIM) -> bytes:
    return encode_rows(np.full((1, dim), value, dtype=np.float32))[0]


def bad_values(dim: int) -> dict[str, bytes]:
    ok = good(1.0, dim)
    nan = bytearray(ok)
    nan[12:16] = np.float32("nan").tobytes()
    inf = bytearray(ok)
    inf[-4:] = np.float32("-inf").tobytes()
    return {
        "empty": b"",
        "foreign": b'{"embedding": [0.1, 0.2]}',
        "short header": ok[:7],
        "header only": ok[:12],
        "truncated": ok[:-1],
        "too long": ok + b"\0",
        "too long by a float": ok + b"\0\0\0\0",
        "bad magic": b"XXXX" + ok[4:],
        "bad version": ok[:4] + b"\x02" + ok[5:],
        "bad dtype": ok[:5] + b"\x02" + ok[6:],
        "reserved set": ok[:6] + b"\x01\x00" + ok[8:],
        "dim zero": header_for(0) + ok[12:],
        "dim lies": header_for(dim + 1) + ok[12:],
        "nan": bytes(nan),
        "inf": bytes(inf),
    }


# elements that are not bulk strings: what redis-py would hand decode_values
# instead of bytes (an exception object, a str, an int, a list...) is an error
NON_BULK = {
    "error": Other(b"-ERR something\r\n"),
    "simple string": Other(b"+OK\r\n"),
    "integer": Other(b":12\r\n"),
    "double": Other(b",1.5\r\n"),
    "boolean": Other(b"#t\r\n"),
    "big number": Other(b"(123456789012345678901234567890\r\n"),
    "blob error": Other(b"!5\r\nERR x\r\n"),
    "verbatim": Other(b"=8\r\ntxt:abcd\r\n"),
    "empty array": Other(b"*0\r\n"),
    "array": Other(b"*2\r\n" + bulk(good()) + b":1\r\n"),
    "nested arrays": Other(b"*2\r\n*2\r\n+a\r\n$1\r\nb\r\n*1\r\n*-1\r\n"),
    "map": Other(b"%1\r\n+k\r\n" + bulk(good()) + b""),
    "set": Other(b"~2\r\n_\r\n$-1\r\n"),
    "push": Other(b">1\r\n+x\r\n"),
    "long error": Other(b"-" + b"E" * 5000 + b"\r\n"),
}
# elements that mean "absent" in either protocol
ABSENT = {"nil bulk": b"$-1\r\n", "nil array": b"*-1\r\n", "null": b"_\r\n"}


def python_view(value: bytes | None | Other) -> object:
    return object() if isinstance(value, Other) else value


@pytest.mark.parametrize("name", sorted(bad_values(DIM)))
@pytest.mark.parametrize("dim", [None, DIM])
def test_every_malformed_value_is_a_counted_miss(name: str, dim: int | None) -> None:
    value = bad_values(DIM)[name]
    values = [None, value, good(2.0), value]
    for cuts in (None, list(range(len(reply(values))))):  # whole, then byte by byte
        r = read(reply(values), 4, dim, cuts=cuts)
        assert r.index.tolist() == [2] and r.errors == 2
        assert r.rows.tolist() == [[2.0] * DIM]
        expected = decode_values(values, dim)
        assert expected.index.tolist() == [2] and expected.errors == 2


@pytest.mark.parametrize("name", sorted(NON_BULK))
def test_every_non_bulk_element_is_a_counted_miss(name: str) -> None:
    values: list[bytes | None | Other] = [good(3.0), NON_BULK[name], good(4.0)]
    wire = reply(values)
    for dim in (None, DIM):
        for cuts in (None, list(range(len(wire)))):
            r = read(wire, 3, dim, cuts=cuts)
            assert r.index.tolist() == [0, 2] and r.errors == 1
            assert r.rows.tolist() == [[3.0] * DIM, [4.0] * DIM]


@pytest.mark.parametrize("name", sorted(ABSENT))
def test_absent_elements_are_uncounted_misses(name: str) -> None:
    wire = b"*3\r\n" + ABSENT[name] + bulk(good(5.0)) + ABSENT[name]
    r = read(wire, 3, None)
    assert r.index.tolist() == [1] and r.errors == 0 and r.rows.tolist() == [[5.0] * DIM]


def test_out_gets_valid_rows_and_keeps_zero_rows_for_the_rest() -> None:
    nan = bad_values(DIM)["nan"]
    values: list[bytes | None | Other] = [good(1.0), nan, None, NON_BULK["error"], good(7.0)]
    out = np.zeros((5, DIM), dtype=np.float32)
    r = read(reply(values), 5, DIM, out=out, cuts=[20, 40, 41])
    assert r.rows is out and r.index.tolist() == [0, 4] and r.errors == 2
    assert out.tolist() == [[1.0] * 4, [0.0] * 4, [0.0] * 4, [0.0] * 4, [7.0] * 4]


def test_the_first_valid_value_sets_the_dimension() -> None:
    values = [good(1.0, 6), good(2.0, 3), good(3.0, 6)]
    r = read(reply(values), 3, None)
    assert r.rows.shape == (2, 6) and r.index.tolist() == [0, 2] and r.errors == 1
    nothing = read(reply([None, b"junk"]), 2, None)
    assert nothing.rows.shape == (0, 0) and nothing.index.tolist() == [] and nothing.errors == 1


def test_payload_bytes_that_look_like_resp_are_data() -> None:
    value = header_for(DIM) + b"\r\n$-1\r\n*3\r\n-E\r\n\x00"
    assert len(value) == 12 + 4 * DIM
    r = read(reply([value, value]), 2, None, cuts=[14, 15, 30])
    assert r.index.tolist() == [0, 1] and r.errors == 0
    assert r.rows.tobytes() == value[12:] * 2


def test_values_round_trip_bit_exactly() -> None:
    special = np.array(
        [[0.0, -0.0, 1e-45, -1e-45], [3.4028235e38, -3.4028235e38, 1.1754944e-38, 0.1]],
        dtype=np.float32,
    )
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 2**32, (50, DIM), dtype=np.uint64).astype(np.uint32)
    noise = noise.view(np.float32)
    noise = noise[np.isfinite(noise).all(axis=1)]
    rows = np.concatenate([special, noise])
    r = read(reply(encode_rows(rows)), len(rows), None, cuts=[7, 100, 1000])
    assert r.rows.view(np.uint32).tolist() == rows.view(np.uint32).tolist()


@pytest.mark.parametrize(
    "wire",
    [
        b"*2\r\n" + bulk(good()),  # a count the request did not ask for (3)
        b"*-1\r\n",
        b"$5\r\nhello\r\n",
        b":3\r\n",
        b"+OK\r\n",
        b"_\r\n",
        b"?3\r\n",
        b"*3\n",  # LF without CR
        b"*3\r\n$abc\r\n",
        b"*3\r\n$-2\r\n",
        b"*3\r\n$99999999999999999999999\r\n",
        b"*3\r\n$4\r\nabcdXY",  # a bulk not followed by CRLF
        b"*3\r\n|1\r\n+a\r\n+b\r\n",  # an attribute
        b">2\r\n+invalidate\r\n*0\r\n",  # a RESP3 push before the reply
        b"*3\r\n\r\n",
        b"*3\r\n@x\r\n",
        b"*3\r\n*1\r\n?\r\n",  # an unknown type inside an aggregate
    ],
)
def test_malformed_replies_are_protocol_errors(wire: bytes) -> None:
    for size in (len(wire), 1, 3):
        reader = MgetReader(3, DIM)
        status = MGET_MORE
        for start in range(0, len(wire), size):
            status = reader.feed(wire[start : start + size])
            if status != MGET_MORE:
                break
        assert status == MGET_PROTOCOL
        with pytest.raises(ArgumentValueError):
            reader.feed(b"\r\n")


def test_an_error_reply_keeps_its_text() -> None:
    wire = b"-NOPERM this user has no permissions to run the 'mget' command\r\n"
    reader = MgetReader(2, DIM)
    for i in range(len(wire) - 1):
        assert reader.feed(wire[i : i + 1]) == MGET_MORE
    assert reader.feed(wire[-1:]) == MGET_REPLY_ERROR
    assert reader.error_text == wire[1:-2].decode()
    with pytest.raises(ArgumentValueError):
        reader.feed(b"*2\r\n")


def test_bytes_after_the_reply_are_reported() -> None:
    reader = MgetReader(1, DIM)
    assert reader.feed(reply([good()]) + b"+PONG\r\n") == MGET_DONE and reader.extra == 7
    empty = MgetReader(0, None)
    assert empty.feed(b"*0\r\n") == MGET_DONE and empty.rows.shape == (0, 0)


def test_arguments_are_checked() -> None:
    with pytest.raises(ArgumentValueError):
        MgetReader(-1, 4)
    with pytest.raises(ArgumentValueError):
        MgetReader(2, 0)
    with pytest.raises(TypeError):
        MgetReader(2, "4")
    for out in (np.zeros((2, 5), np.float32), np.zeros((2, 4)), np.zeros((4, 2), np.float32).T):
        with pytest.raises(ArgumentValueError):
            MgetReader(2, 4, out)
    # rows written into `out` need their shape known: `out` without a dim is refused
    for out in (np.zeros((2, 0), np.float32), np.zeros((2, 4), np.float32)):
        with pytest.raises(ArgumentValueError, match="out needs dim"):
            MgetReader(2, None, out)


def test_a_feed_that_could_not_allocate_the_rows_leaves_the_reader_refusing() -> None:
    # a hostile first value claims a dimension whose (n, dim) rows cannot be had:
    # the feed raises, and feeding again is an error, never a write through no rows
    dim = (536870912 - 12) // 4
    head = b"EMBC\x01\x01\x00\x00" + dim.to_bytes(4, "little")
    reader = MgetReader(1_000_000, None)
    with pytest.raises((MemoryError, ValueError)):
        reader.feed(b"*1000000\r\n$%d\r\n" % (12 + 4 * dim) + head)
    with pytest.raises(ArgumentValueError, match="earlier feed failed"):
        reader.feed(b"\x00" * 64)


def test_a_feed_while_another_thread_feeds_is_refused() -> None:
    # the GIL is released while a long chunk is read: a second thread's feed of the
    # same reader is refused rather than run on the same state
    import threading

    dim = 1 << 20
    head = b"*1\r\n$%d\r\nEMBC\x01\x01\x00\x00" % (12 + 4 * dim) + dim.to_bytes(4, "little")
    part = b"\x41" * (3 << 20)
    for _ in range(20):
        reader = MgetReader(1, dim)
        assert reader.feed(head) == MGET_MORE
        outcomes: list[object] = []

        def feed(reader: MgetReader, outcomes: list[object]) -> None:
            try:
                outcomes.append(reader.feed(part))
            except ArgumentValueError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=feed, args=(reader, outcomes)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # one after the other: the second reads past the 4 MiB row (a protocol error);
        # at once: the second is refused; never both read into the row
        kinds = sorted(
            "refused"
            if isinstance(o, ArgumentValueError)
            else {MGET_MORE: "more", MGET_PROTOCOL: "protocol"}.get(o, repr(o))
            for o in outcomes
        )
        assert kinds in (["more", "refused"], ["more", "protocol"]), kinds


# -- the C reader against the Python decoder --------------------------------------------

values_strategy = st.lists(
    st.one_of(
        st.none(),
        st.builds(
            lambda d, v: good(v, d),
            st.sampled_from([3, 4, 5]),
            st.floats(width=32, allow_nan=False, allow_infinity=False),
        ),  # fmt: skip
        st.sampled_from(sorted(bad_values(4).values()) + sorted(bad_values(3).values())),
        st.binary(max_size=40),
        st.sampled_from([NON_BULK[k] for k in sorted(NON_BULK)]),
        st.sampled_from([None]),  # the other absent forms are checked above
    ),
    max_size=12,
)


@given(values_strategy, st.sampled_from([None, 3, 4, 5]), st.booleans(),
       st.lists(st.integers(0, 2000), max_size=6))  # fmt: skip
@settings(max_examples=by_profile(default=100, ci=400), deadline=None)
def test_reader_agrees_with_the_python_decoder(
    values: list[bytes | None | Other], dim: int | None, into: bool, cuts: list[int]
) -> None:
    n = len(values)
    expected = decode_values([python_view(v) for v in values], dim)
    out = np.zeros((n, dim), np.float32) if into and dim is not None else None
    r = read(reply(values), n, dim, out=out, cuts=cuts)
    assert r.errors == expected.errors
    assert r.index.tolist() == expected.index.tolist()
    if out is None:
        assert r.rows.shape[0] == len(expected.index)
        if len(expected.index):
            assert r.rows.view(np.uint32).tolist() == expected.rows.view(np.uint32).tolist()
    else:
        want = np.zeros((n, dim), np.float32)
        want[expected.index] = expected.rows
        assert out.view(np.uint32).tolist() == want.view(np.uint32).tolist()


@given(st.binary(max_size=300), st.sampled_from([None, 1, 4]), st.integers(0, 5))
@settings(max_examples=by_profile(default=100, ci=400), deadline=None)
def test_arbitrary_bytes_never_crash_the_reader(wire: bytes, dim: int | None, n: int) -> None:
    reader = MgetReader(n, dim)
    status = reader.feed(wire)
    assert status in (MGET_MORE, MGET_DONE, MGET_REPLY_ERROR, MGET_PROTOCOL)
    if status == MGET_DONE:
        assert len(reader.index) + reader.errors <= n
        assert np.isfinite(reader.rows).all()


# -- the request ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [
        [CacheKey(f"text {i}", "model/v1") for i in range(50)],
        [CacheKey("a", "m"), CacheKey("b", "n:x"), CacheKey("c", "m", "chunk")],
        [CacheKey("é", "modèle")],
        [],
    ],
)
def test_mget_command_is_what_redis_py_would_send(keys: list[CacheKey]) -> None:
    redis = pytest.importorskip("redis.asyncio.connection")
    packed = b"".join(
        redis.Connection().pack_command("MGET", *[redis_key(b"pre", k) for k in keys])
    )
    assert mget_command(b"pre", keys) == packed
