"""The Redis calls of a RedisTier that go per node: reading a batch from a
Redis Cluster, and finding and deleting every key of a model on one server or
on every primary of a cluster (embcache.tier.redis's drop_model).

    cluster_mget(client, rkeys) -> values: one MGET per hash slot, pipelined
    primaries(client, call) -> the cluster's primaries (its slot map loaded)
    drop_on(client, node, pattern, call) -> deleted: SCAN + UNLINK on one node

`call` bounds each awaited Redis call (RedisTier's timeout). Nothing here
imports redis-py: the clients are the ones the tier was given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["SCAN_COUNT", "cluster_mget", "drop_on", "primaries"]

SCAN_COUNT = 1000
"""Keys asked per SCAN step (and deleted per UNLINK) by drop_on."""

Call = Callable[[Awaitable[Any]], Awaitable[Any]]


async def cluster_mget(client: Any, rkeys: list[bytes]) -> list[Any]:
    """Values of `rkeys` on the cluster `client` (a redis.asyncio RedisCluster):
    one MGET per hash slot in one pipeline, which redis-py sends per node, to
    every node at once. Raises the first failed MGET's error."""
    by_slot: dict[int, list[int]] = {}
    for i, rkey in enumerate(rkeys):
        by_slot.setdefault(client.keyslot(rkey), []).append(i)
    pipe = client.pipeline(transaction=False)
    for positions in by_slot.values():
        pipe.execute_command("MGET", *[rkeys[i] for i in positions])
    replies = await pipe.execute(raise_on_error=False)
    values: list[Any] = [None] * len(rkeys)
    for positions, reply in zip(by_slot.values(), replies):
        if isinstance(reply, BaseException):
            raise reply
        for i, value in zip(positions, reply):
            values[i] = value
    return values


async def primaries(client: Any, call: Call) -> list[Any]:
    """The primaries of the cluster `client`; a client that has not loaded its
    slot map yet is made to (one PING through `call`) first."""
    nodes: list[Any] = list(client.get_primaries())
    if not nodes:
        await call(client.ping())
        nodes = list(client.get_primaries())
    return nodes


async def drop_on(client: Any, node: Any, pattern: bytes, call: Call) -> int:
    """SCAN one server (`node` None: `client` is one server) or one cluster
    primary (`node`) for keys matching `pattern`, UNLINKing each step's keys as
    it goes; the number deleted. Each call goes through `call`."""
    deleted = 0
    cursor = 0
    while True:
        if node is None:
            cursor, found = await call(client.scan(cursor, match=pattern, count=SCAN_COUNT))
        else:
            reply = await call(
                client.scan(cursor, match=pattern, count=SCAN_COUNT, target_nodes=node)
            )
            cursors, found = reply
            cursor = next(iter(cursors.values())) if isinstance(cursors, dict) else cursors
        if found:
            deleted += int(await call(client.unlink(*found)))
        if not cursor:
            return deleted
