"""The facade and the tier use the shared argument checks of embcache.core.checks:
one "not given" marker for load / open keywords (the core's too), one rule for
seconds."""

from __future__ import annotations

import inspect

import pytest

from embcache import EmbeddingCache, SyncEmbeddingCache
from embcache.core.checks import UNSET, check_seconds


def test_one_unset_marker_for_the_core_and_the_facade() -> None:
    core = SyncEmbeddingCache.load.__kwdefaults__
    assert core is not None
    for name in ("max_entries", "ttl_seconds", "max_memory_mb", "dim"):
        assert core[name] is UNSET
        for method in (EmbeddingCache.load, EmbeddingCache.open):
            assert inspect.signature(method).parameters[name].default is UNSET


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_save_every_follows_the_shared_seconds_rule(value: object, tmp_path: object) -> None:
    import asyncio

    with pytest.raises((TypeError, ValueError)) as expected:
        check_seconds(value, "save_every")

    async def main() -> None:
        async with EmbeddingCache.open(f"{tmp_path}/c.snap", save_every=value):  # type: ignore[arg-type]
            pass

    with pytest.raises(type(expected.value), match="save_every"):
        asyncio.run(main())
