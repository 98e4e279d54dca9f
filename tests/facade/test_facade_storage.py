"""EmbeddingCache passes storage= to its core: the constructor, load and open
(which default to the snapshot's storage, or float32 for a new cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import key, run

from embcache import ArgumentValueError, EmbeddingCache, SyncEmbeddingCache
from embcache._core import decode_rows, encode_rows


def stored(row: np.ndarray, storage: str) -> np.ndarray:
    m = np.ascontiguousarray(row, dtype=np.float32)[None]
    return decode_rows(encode_rows(m, storage), storage, m.shape[1])[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("storage", ["float32", "float16", "bfloat16", "int8"])
def test_the_constructor_passes_storage_to_the_core(storage: str) -> None:
    async def go() -> None:
        c = EmbeddingCache(16, storage=storage)
        assert c.storage == c.sync.storage == storage
        assert (await c.get_cache_info()).storage == storage
        v = np.linspace(-3, 3, 9, dtype=np.float32)
        await c.put(key(1), v)
        got = await c.get(key(1))
        assert got is not None and got.tobytes() == stored(v, storage).tobytes()

    run(go())


def test_a_bad_storage_is_refused_by_the_constructor_load_and_open(tmp_path: Path) -> None:
    path = tmp_path / "c.snap"
    SyncEmbeddingCache(4).save(path)
    with pytest.raises(ArgumentValueError, match="'int8'"):
        EmbeddingCache(4, storage="int4")
    with pytest.raises(ArgumentValueError, match="'int8'"):
        run(EmbeddingCache.load(path, storage="int4"))

    async def opened() -> None:
        async with EmbeddingCache.open(path, storage="int4"):
            pass

    with pytest.raises(ArgumentValueError, match="'int8'"):
        run(opened())


def test_load_and_open_keep_or_convert_the_snapshot_storage(tmp_path: Path) -> None:
    path = tmp_path / "c.snap"
    v = np.linspace(-1, 1, 7, dtype=np.float32)
    sync = SyncEmbeddingCache(16, storage="float16")
    sync.put(key(1), v)
    sync.save(path)

    async def go() -> None:
        kept = await EmbeddingCache.load(path)
        assert kept.storage == "float16"
        converted = await EmbeddingCache.load(path, storage="int8")
        assert converted.storage == "int8"
        got = await converted.get(key(1))
        assert got is not None
        assert got.tobytes() == stored(stored(v, "float16"), "int8").tobytes()
        async with EmbeddingCache.open(path) as c:
            assert c.storage == "float16"
        async with EmbeddingCache.open(path, storage="bfloat16") as c:
            assert c.storage == "bfloat16"
        async with EmbeddingCache.open(tmp_path / "new.snap") as c:
            assert c.storage == "float32"
        async with EmbeddingCache.open(tmp_path / "new2.snap", storage="int8") as c:
            assert c.storage == "int8"

    run(go())
