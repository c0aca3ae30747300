"""The server's Redis client under more commands at once than it has connections: they wait for one.

redis-py 8 caps an asyncio pool at 100 connections and fails the 101st command at once
("Too many connections"), which a run of a million actions reached: its actions failed
with "state store unreachable" while Redis was up and answering.
"""

from __future__ import annotations

import asyncio

from fanout.server.app import REDIS_MAX_CONNECTIONS, connect_redis
from fanout.server.redis_process import RedisProcess

# Each BLPOP holds its connection for its whole wait without blocking Redis: more of them than the
# pool has connections means some must wait for a connection to come back.
HELD_SECONDS = 0.3
AT_ONCE = REDIS_MAX_CONNECTIONS + 100


def test_commands_beyond_the_pool_wait_for_a_connection(redis_server: RedisProcess) -> None:
    async def main() -> list[object]:
        client = connect_redis(redis_server.url)
        try:
            waits = [client.blpop([f"fanout-test-empty-{i}"], timeout=HELD_SECONDS) for i in range(AT_ONCE)]
            return list(await asyncio.gather(*waits))
        finally:
            await client.aclose()

    assert asyncio.run(main()) == [None] * AT_ONCE
