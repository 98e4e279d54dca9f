"""The Redis tier without a server: its wire format, its keys, its circuit
breaker, every new entry point's bad input, and the optional dependency
(``import embcache`` without redis-py; ``embcache.redis`` saying what to install)."""

from __future__ import annotations

import asyncio
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import by_profile, run_python
from hypothesis import given, settings
from hypothesis import strategies as st

from embcache import CacheKey, EmbeddingCache, SyncEmbeddingCache
from embcache.tier.breaker import Breaker
from embcache.tier.wire import (
    HEADER,
    decode_values,
    encode_rows,
    header_for,
    model_pattern,
    quote_model,
)

redis = pytest.importorskip("redis", reason='redis-py is missing (pip install ".[redis]")')
from redis.asyncio import Redis  # noqa: E402
from redis.asyncio.cluster import RedisCluster  # noqa: E402

from embcache.redis import RedisTier, RedisTierError  # noqa: E402

# a client object only: nothing here connects (port 9 is never used by a test)
CLIENT = Redis(host="127.0.0.1", port=9)


def tier(**kw: object) -> RedisTier:
    return RedisTier(CLIENT, **kw)  # type: ignore[arg-type]


# -- keys ------------------------------------------------------------------------------


def test_keys_are_unambiguous_for_any_field_contents() -> None:
    t = tier()
    pairs = [
        (CacheKey("a:b", "c"), CacheKey("a", "b:c")),
        (CacheKey("a", "m", None), CacheKey("a", "m", "")),
        (CacheKey("x", "m:1"), CacheKey("x", "m%3A1")),
        (CacheKey("x", "m", "a:b"), CacheKey("x", "m:a", "b")),
    ]
    for one, other in pairs:
        assert t.redis_key(one) != t.redis_key(other)


def test_key_layout_and_stability() -> None:
    k = CacheKey("hash", "nomic-embed-text-v1.5", "chunk-3")
    key = RedisTier(CLIENT, prefix="emb").redis_key(k)
    assert key == b"emb:nomic-embed-text-v1.5:" + k.digest.hex().encode()
    # the digest is stable across processes and releases (docs/guide/keys.md), so is the key
    assert k.digest.hex() == CacheKey("hash", "nomic-embed-text-v1.5", "chunk-3").digest.hex()


def test_model_is_quoted_against_separators_globs_and_hash_tags() -> None:
    assert quote_model("m-1.5_x") == b"m-1.5_x"
    assert quote_model("a:b{c}*?[]\\ é") == b"a%3Ab%7Bc%7D%2A%3F%5B%5D%5C%20%C3%A9"
    k = CacheKey("h", "{tag}")
    assert b"{" not in tier().redis_key(k) and b"}" not in tier().redis_key(k)


def test_prefixes_do_not_overlap() -> None:
    # prefix "a" with model "b" must not match keys of prefix "a:b"
    k = CacheKey("h", "m")
    inner = RedisTier(CLIENT, prefix="a:b").redis_key(k)
    pattern = model_pattern(b"a", "b")
    assert not _glob(pattern, inner)
    assert _glob(pattern, RedisTier(CLIENT, prefix="a").redis_key(CacheKey("h", "b")))
    assert _glob(model_pattern(b"a:b", "m"), inner)


def _glob(pattern: bytes, key: bytes) -> bool:
    """Redis's MATCH for the patterns drop_model builds (literals, \\x, ?)."""
    i = j = 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\":
            i += 1
            c = pattern[i : i + 1]
        elif c == b"?":
            if j >= len(key):
                return False
            i, j = i + 1, j + 1
            continue
        if key[j : j + 1] != c:
            return False
        i, j = i + 1, j + 1
    return j == len(key)


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
@settings(max_examples=by_profile(default=100, ci=200), deadline=None)
def test_distinct_keys_get_distinct_redis_keys(a: str, b: str, model: str) -> None:
    t = tier()
    one, other = CacheKey(a, model), CacheKey(b, model)
    assert (t.redis_key(one) == t.redis_key(other)) == (one == other)
    assert _glob(model_pattern(b"embcache", model), t.redis_key(one))


# -- values ----------------------------------------------------------------------------


def test_value_layout() -> None:
    rows = np.array([[1.0, -2.5, 3.0]], dtype=np.float32)
    (value,) = encode_rows(rows)
    assert value[:4] == b"EMBC" and value[4] == 1 and value[5] == 1
    assert value[8:12] == (3).to_bytes(4, "little")
    assert value[12:] == rows.astype("<f4").tobytes()
    assert len(value) == HEADER.size + 12


def test_round_trip_of_many_rows() -> None:
    rows = np.random.default_rng(1).standard_normal((50, 768)).astype(np.float32)
    decoded = decode_values(encode_rows(rows), 768)
    assert decoded.index.tolist() == list(range(50)) and decoded.errors == 0
    assert np.array_equal(decoded.rows, rows)
    # dimension learnt from the values
    decoded = decode_values([None, *encode_rows(rows[:2])], None)
    assert decoded.index.tolist() == [1, 2] and np.array_equal(decoded.rows, rows[:2])
    one = decode_values(encode_rows(rows[3:4]), None)
    assert one.index.tolist() == [0] and np.array_equal(one.rows, rows[3:4])


def _bad_values(dim: int) -> dict[str, bytes]:
    good = encode_rows(np.ones((1, dim), dtype=np.float32))[0]
    nan = bytearray(good)
    nan[12:16] = np.float32("nan").tobytes()
    inf = bytearray(good)
    inf[-4:] = np.float32("-inf").tobytes()
    return {
        "empty": b"",
        "foreign": b'{"embedding": [0.1, 0.2]}',
        "short header": good[:7],
        "truncated": good[:-1],
        "too long": good + b"\0",
        "bad magic": b"XXXX" + good[4:],
        "bad version": good[:4] + b"\x02" + good[5:],
        "bad dtype": good[:5] + b"\x02" + good[6:],
        "reserved set": good[:6] + b"\x01\x00" + good[8:],
        "dim zero": header_for(0),
        "dim lies": header_for(dim + 1) + good[12:],
        "nan": bytes(nan),
        "inf": bytes(inf),
        "other dim": encode_rows(np.ones((1, dim + 3), dtype=np.float32))[0],
    }


@pytest.mark.parametrize("name", sorted(_bad_values(4)))
def test_every_invalid_value_is_a_counted_miss(name: str) -> None:
    bad = _bad_values(4)[name]
    good = encode_rows(np.full((1, 4), 2.0, dtype=np.float32))[0]
    decoded = decode_values([good, bad, None], 4)
    assert decoded.index.tolist() == [0] and decoded.errors == 1
    assert decoded.rows.tolist() == [[2.0] * 4]
    decoded = decode_values([None, bad, good], None)  # the first valid value sets the dim
    expected = [1] if name == "other dim" else [2]  # (a valid value, of another dim)
    assert decoded.index.tolist() == expected and decoded.errors == 1
    for dim in (4,) if name == "other dim" else (None, 4):
        alone = decode_values([bad], dim)  # the one-value path
        assert len(alone.index) == 0 and alone.errors == 1


def test_non_bytes_values_are_misses() -> None:
    decoded = decode_values(["text", 12, [1, 2], None], None)
    assert len(decoded.index) == 0 and decoded.errors == 3
    assert decode_values(["text"], 4).errors == 1
    length = HEADER.size + 16  # of the right length, but not bytes
    mixed = decode_values(["x" * length, encode_rows(np.ones((1, 4), np.float32))[0]], 4)
    assert mixed.index.tolist() == [1] and mixed.errors == 1
    assert decode_values([bytearray(length)] * 2, 4).errors == 2


@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=64)), max_size=8),
    st.sampled_from([None, 1, 4]),
)
@settings(max_examples=by_profile(default=100, ci=300), deadline=None)
def test_decoding_never_raises(values: list[bytes | None], dim: int | None) -> None:
    decoded = decode_values(values, dim)
    assert decoded.errors + len(decoded.index) == sum(v is not None for v in values)
    assert len(decoded.rows) == len(decoded.index) and np.isfinite(decoded.rows).all()


# -- circuit breaker -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_cools_down_and_tries_once() -> None:
    clock = Clock()
    b = Breaker(3, 5.0, clock)
    for _ in range(2):
        assert b.allow()
        assert not b.failed()
    assert b.state == "closed"
    assert b.allow() and b.failed()
    assert b.state == "open" and not b.allow()
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.2
    assert b.state == "half-open"
    assert b.allow()  # the trial
    assert not b.allow()  # only one at a time
    assert b.failed() and b.state == "open"  # trial failed: open again
    clock.now += 5.1
    assert b.allow()
    b.abandoned()  # cancelled trial: another may go
    assert b.allow()
    b.succeeded()
    assert b.state == "closed" and b.allow() and b.opened == 2


# -- bad input to every new entry point ------------------------------------------------


@pytest.mark.parametrize(
    "client",
    [None, "redis://127.0.0.1", 6379, object(), redis.Redis(host="127.0.0.1", port=9)],
    ids=["None", "url", "int", "object", "sync-client"],
)
def test_client_must_be_an_asyncio_client(client: object) -> None:
    with pytest.raises(TypeError, match="redis.asyncio"):
        RedisTier(client)  # type: ignore[arg-type]


def test_decode_responses_is_refused() -> None:
    async def main() -> None:  # clients are made in a running loop (Python 3.9 needs one)
        with pytest.raises(ValueError, match="decode_responses"):
            RedisTier(Redis(port=9, decode_responses=True))

    asyncio.run(main())


def test_cluster_client_is_accepted_without_connecting() -> None:
    async def main() -> None:
        client = RedisCluster(host="127.0.0.1", port=9)
        t = RedisTier(client, prefix="p")
        assert t.client is client and "RedisCluster" in repr(t)

    asyncio.run(main())


@pytest.mark.parametrize("prefix", [b"embcache", 1, None, ["a"]])
def test_prefix_type(prefix: object) -> None:
    with pytest.raises(TypeError, match="prefix"):
        tier(prefix=prefix)


@pytest.mark.parametrize("prefix", ["", "a b", "a{b}", "a*", "a?", "a[b]", "a\\b", "é", "a\nb"])
def test_prefix_value(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        tier(prefix=prefix)


@pytest.mark.parametrize("name", ["ttl_seconds", "timeout", "cooldown_seconds"])
@pytest.mark.parametrize("value", [True, "1", [1], b"1"])
def test_seconds_type(name: str, value: object) -> None:
    with pytest.raises(TypeError, match=name):
        tier(**{name: value})


@pytest.mark.parametrize("name", ["ttl_seconds", "timeout", "cooldown_seconds"])
@pytest.mark.parametrize("value", [0, -1, -0.5, math.nan, math.inf, -math.inf])
def test_seconds_value(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        tier(**{name: value})


@pytest.mark.parametrize("name", ["timeout", "cooldown_seconds"])
def test_none_is_only_for_ttl(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        tier(**{name: None})


def test_settings_are_kept() -> None:
    t = tier(prefix="x:y", ttl_seconds=1.5, timeout=0.1, cooldown_seconds=2)
    assert (t.prefix, t.ttl_seconds, t.timeout, t.cooldown_seconds) == ("x:y", 1.5, 0.1, 2)
    assert tier().ttl_seconds is None
    assert (
        t.get_tier_info().breaker == "closed"
        and t.get_tier_info().hits == t.get_tier_info().errors == 0
    )


@pytest.mark.parametrize("bad", [None, "key", ("h", "m"), b"x", 1])
def test_redis_key_needs_a_cachekey(bad: object) -> None:
    with pytest.raises(TypeError, match="CacheKey"):
        tier().redis_key(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 1, b"m", ["m"]])
def test_drop_model_type(bad: object) -> None:
    with pytest.raises(TypeError, match="model_version"):
        asyncio.run(tier().drop_model(bad))  # type: ignore[arg-type]


def test_drop_model_empty() -> None:
    with pytest.raises(ValueError, match="model_version"):
        asyncio.run(tier().drop_model(""))


@pytest.mark.parametrize("bad", [1, "redis", object(), CLIENT, SyncEmbeddingCache(1, None, 1)])
def test_tier_argument_of_the_cache(bad: object) -> None:
    with pytest.raises(TypeError, match="tier"):
        EmbeddingCache(10, None, 1, tier=bad)  # type: ignore[arg-type]


def test_drop_model_on_a_dead_server_raises_redis_tier_error() -> None:
    async def main() -> None:
        client = Redis(host="127.0.0.1", port=_closed_port())
        try:
            with pytest.raises(RedisTierError) as info:
                await RedisTier(client, timeout=0.5).drop_model("m")
            assert isinstance(info.value, ConnectionError)
        finally:
            await client.aclose()

    asyncio.run(main())


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the optional dependency -----------------------------------------------------------

WITHOUT_REDIS = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoRedis(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "redis" or name.startswith("redis."):
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoRedis())
    import asyncio
    import numpy as np
    import embcache
    from embcache import CacheKey, EmbeddingCache

    async def main():
        cache = EmbeddingCache(10, None, 1)
        await cache.put(CacheKey("a", "m"), np.ones(3))
        assert (await cache.get(CacheKey("a", "m"))).tolist() == [1.0] * 3
        info = await cache.get_cache_info()
        assert (info.tier_hits, info.tier_misses, info.tier_errors) == (0, 0, 0)

    asyncio.run(main())
    assert not any(n == "redis" or n.startswith("redis.") for n in sys.modules)
    try:
        import embcache.redis
    except ImportError as exc:
        print("ERROR:", exc)
    """
)


def test_embcache_works_without_redis_and_says_what_to_install(tmp_path: Path) -> None:
    proc = run_python(["-c", WITHOUT_REDIS], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = 'ERROR: embcache.redis needs redis-py >= 5.3: pip install "redis>=5.3" hiredis'
    assert expected in proc.stdout
    assert 'pip install ".[redis]"' in proc.stdout


def test_a_redis_py_older_than_5_3_is_refused_with_what_to_install(tmp_path: Path) -> None:
    # before 5.3 an asyncio pool's get_connection needs a command name: every read would fail
    old = tmp_path / "redis"
    old.mkdir()
    (old / "__init__.py").write_text('__version__ = "5.0.8"\n')
    (old / "exceptions.py").write_text(
        "class ConnectionError(Exception): pass\n"
        "class InvalidResponse(Exception): pass\n"
        "class ResponseError(Exception): pass\n"
    )
    code = "import embcache.redis"
    proc = run_python(["-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode != 0
    assert 'needs redis-py >= 5.3: pip install "redis>=5.3" hiredis' in proc.stderr
    assert "this is redis-py 5.0.8" in proc.stderr


def test_importing_embcache_does_not_import_redis(tmp_path: Path) -> None:
    code = "import sys, embcache; print([n for n in sys.modules if n.split('.')[0] == 'redis'])"
    proc = run_python(["-c", code], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- the tier protocol's own argument checks (no server: they fail before Redis) -------


@pytest.mark.parametrize("keys", [["k"], [None], "abc", 5, [CacheKey("a", "m"), b"x"]])
def test_protocol_methods_want_cachekeys(keys: object) -> None:
    t = tier()
    row = np.ones((1, 4), dtype=np.float32)
    for call in (t.get_many(keys, dim=4), t.put_many(keys, row), t.remove_many(keys)):  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            asyncio.run(call)


@pytest.mark.parametrize(
    "matrix",
    [
        [[1.0, 2.0]],
        np.ones((1, 4)),  # float64
        np.ones(4, dtype=np.float32),
        np.ones((2, 4), dtype=np.float32),
        np.ones((1, 0), dtype=np.float32),
        np.array([[1.0, np.nan]], dtype=np.float32),
        np.array([[np.inf, 1.0]], dtype=np.float32),
    ],
    ids=["list", "float64", "1-D", "rows", "dim0", "nan", "inf"],
)
def test_put_many_checks_its_matrix(matrix: object) -> None:
    t = tier()
    with pytest.raises((TypeError, ValueError)):
        asyncio.run(t.put_many([CacheKey("a", "m")], matrix))  # type: ignore[arg-type]
    assert t.get_tier_info().errors == 0  # rejected before any Redis call


@pytest.mark.parametrize("dim", [0, -1, True, 1.5, "4"])
def test_get_many_checks_dim(dim: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        asyncio.run(tier().get_many([CacheKey("a", "m")], dim=dim))  # type: ignore[arg-type]


def test_protocol_methods_accept_empty_input_without_redis() -> None:
    t = tier()
    matrix, found = asyncio.run(t.get_many([], dim=4))
    assert matrix.shape == (0, 4) and found.shape == (0,)
    asyncio.run(t.put_many([], np.ones((0, 4), dtype=np.float32)))
    assert asyncio.run(t.remove_many([])) == 0
    assert t.get_tier_info().errors == 0


def test_decoding_into_out() -> None:
    rows = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    values: list[bytes | None] = list(encode_rows(rows))
    out = np.zeros((6, 4), dtype=np.float32)
    decoded = decode_values(values, 4, out)
    assert decoded.rows is out and decoded.index.tolist() == list(range(6))
    assert np.array_equal(out, rows)
    # every value present and of the right length, two of them bad: their rows zero
    bad = dict(_bad_values(4))
    values[1], values[4] = bad["nan"], bad["bad magic"]
    out = np.zeros((6, 4), dtype=np.float32)
    decoded = decode_values(values, 4, out)
    assert decoded.index.tolist() == [0, 2, 3, 5] and decoded.errors == 2
    assert not out[[1, 4]].any() and np.array_equal(out[[0, 2, 3, 5]], rows[[0, 2, 3, 5]])
    # absent and short values: the general path, still into out
    values[2], values[3] = None, b"short"
    out = np.zeros((6, 4), dtype=np.float32)
    decoded = decode_values(values, 4, out)
    assert decoded.index.tolist() == [0, 5] and decoded.errors == 3
    assert not out[1:5].any() and np.array_equal(out[[0, 5]], rows[[0, 5]])
    one = np.zeros((1, 4), dtype=np.float32)
    assert decode_values(encode_rows(rows[:1]), 4, one).index.tolist() == [0]
    assert np.array_equal(one, rows[:1])


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((2, 4), dtype=np.float64),
        np.zeros((3, 4), dtype=np.float32),
        np.zeros((2, 5), dtype=np.float32),
        np.zeros((4, 4), dtype=np.float32)[::2],
        [[0.0] * 4] * 2,
    ],
    ids=["float64", "rows", "dim", "strided", "list"],
)
def test_get_many_checks_out(out: object) -> None:
    keys = [CacheKey("a", "m"), CacheKey("b", "m")]
    with pytest.raises(ValueError, match="out"):
        asyncio.run(tier().get_many(keys, dim=4, out=out))  # type: ignore[arg-type]
