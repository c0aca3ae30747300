"""Reads for watches: commands a watcher may walk away from without costing a Redis connection.

A watch waits for its parent's next change in a blocking XREAD on a pooled
connection, and its client may close it at any moment: a run's watcher goes
once it has what it wanted. When a command is cancelled, redis-py cannot tell
when the reply it no longer waits for will come, so it closes the connection,
and a later command opens a new one (a TCP handshake, HELLO with AUTH, CLIENT
SETINFO twice). With watches opened and closed a hundred times a second, that
was a new connection for every second watch and about a tenth of the server's
CPU.

So a watch's commands run apart from it. A short one (`completing`) finishes
whether or not its caller still waits. A blocking read (`xread`) sends CLIENT
ID with it (one round trip: Redis answers the first at once, then blocks on
the second); if its caller is cancelled, CLIENT UNBLOCK from another
connection ends the block, the read gets its empty answer, and the connection
goes back to the pool whole. A Redis Cluster client keeps the plain read (a
cancel then costs its connection, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis

T = TypeVar("T")

# How long an ended read may take to give its answer before its connection is closed instead.
UNBLOCK_SECONDS = 5.0

_under_way: set[asyncio.Future[Any]] = set()  # commands whose caller went: held, or the loop could drop them


async def completing(command: Awaitable[T]) -> T:
    """Await a short command that runs to its end even if the caller is cancelled meanwhile."""
    running = asyncio.ensure_future(command)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        _hold(running)
        raise


async def xread(client: Any, streams: dict[str, str], count: int, block_ms: int) -> Any:
    """XREAD COUNT `count` BLOCK `block_ms` STREAMS ...: what client.xread() returns (empty when the block ran out)."""
    if not isinstance(client, aioredis.Redis):
        return await client.xread(streams, count=count, block=block_ms)
    read = _BlockingRead(client, ("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", *streams, *streams.values()))
    try:
        reply = await asyncio.shield(read.task)
    except asyncio.CancelledError:
        _hold(asyncio.ensure_future(read.end()))
        raise
    callback = client.response_callbacks.get("XREAD")
    return callback(reply) if callback is not None else reply


async def settle() -> None:
    """Wait until the commands whose callers went have ended and given their connections back."""
    while _under_way:
        await asyncio.gather(*_under_way, return_exceptions=True)


class _BlockingRead:
    def __init__(self, client: aioredis.Redis, command: tuple[Any, ...]) -> None:
        self._client = client
        self._client_id: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._run(command))

    async def _run(self, command: tuple[Any, ...]) -> Any:
        pool = self._client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(connection.pack_commands([("CLIENT", "ID"), command]))
            self._client_id.set_result(await connection.read_response())
            return await connection.read_response()
        finally:
            self._client_id.cancel()  # no-op once it has its result
            await pool.release(connection)  # redis-py has closed it if the exchange broke

    async def end(self) -> None:
        """End the read nobody waits for any more; its connection goes back to the pool."""
        try:
            if not self.task.done():
                await self._client.client_unblock(await asyncio.shield(self._client_id))
            await asyncio.wait_for(asyncio.shield(self.task), UNBLOCK_SECONDS)
        except (Exception, asyncio.CancelledError):  # no id, no unblock or no answer: cancelling closes it
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task  # its outcome, whatever it is, is nobody's any more


def _hold(running: asyncio.Future[Any]) -> None:
    _under_way.add(running)
    running.add_done_callback(_forget)


def _forget(running: asyncio.Future[Any]) -> None:
    _under_way.discard(running)
    if not running.cancelled():
        running.exception()  # retrieved: a failure nobody waits for is no error to log
