"""Blocking XREADs a watcher walks away from (blocking_reads.py), against a real Redis of this module's own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis
import redis.asyncio as aioredis

from fanout.quota import blocking_reads
from fanout.server.redis_process import RedisProcess

T = TypeVar("T")


def with_client(redis_server: RedisProcess, body: Callable[[aioredis.Redis, redis.Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            with redis.Redis.from_url(redis_server.url) as observer:
                return await body(client, observer)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def blocked_client(observer: redis.Redis) -> int:
    """The id of the one client blocked in an XREAD, once Redis says it blocks."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        blocked = [c for c in observer.client_list() if c["cmd"] == "xread" and "b" in c["flags"]]
        if blocked:
            return int(blocked[0]["id"])
        await asyncio.sleep(0.01)
    raise AssertionError("no client blocked in XREAD")


def connections_received(observer: redis.Redis) -> int:
    return int(observer.info("stats")["total_connections_received"])


def test_a_read_its_caller_walked_away_from_ends_at_once_and_keeps_its_connection(own_redis: RedisProcess) -> None:
    async def body(client: aioredis.Redis, observer: redis.Redis) -> tuple[Any, ...]:
        # Connections to spare in the pool, as a server has: the unblock takes one of them.
        await asyncio.gather(client.blpop(["nothing"], 0.05), client.blpop(["nothing"], 0.05), client.ping())
        opened = connections_received(observer)
        waiting = asyncio.create_task(blocking_reads.xread(client, {"walked-away": "$"}, 1, 60_000))
        reader = await blocked_client(observer)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await asyncio.wait_for(blocking_reads.settle(), 5)
        unblocked = observer.info("clients")["blocked_clients"] == 0
        alive = reader in {int(c["id"]) for c in observer.client_list()}
        # As many commands at once as before need no new connection.
        await asyncio.gather(client.blpop(["nothing"], 0.05), client.blpop(["nothing"], 0.05), client.ping())
        return unblocked, alive, connections_received(observer) - opened

    unblocked, alive, opened_since = with_client(own_redis, body)

    assert unblocked  # not left blocked for its minute
    assert alive  # the connection was kept, not closed
    assert opened_since == 0


def test_a_blocking_read_returns_the_entry_that_came_and_an_empty_answer_when_none_did(
    own_redis: RedisProcess,
) -> None:
    async def body(client: aioredis.Redis, observer: redis.Redis) -> tuple[Any, Any]:
        waiting = asyncio.create_task(blocking_reads.xread(client, {"arrivals": "$"}, 1, 10_000))
        await blocked_client(observer)
        entry = cast(bytes, observer.xadd("arrivals", {"phase": "4"}))
        came = await asyncio.wait_for(waiting, 5)
        none = await blocking_reads.xread(client, {"arrivals": entry.decode()}, 1, 20)
        return came, none

    came, none = with_client(own_redis, body)

    # As client.xread() has it: [[stream, [(id, fields), ...]], ...].
    [[stream, [(_, fields)]]] = came
    assert (stream, fields) == (b"arrivals", {b"phase": b"4"})
    assert not none
