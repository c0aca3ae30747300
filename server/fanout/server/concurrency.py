"""Bounded concurrency for the servicers' fan-out over Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def at_most(limit: int, coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """The coroutines' results in order, at most `limit` running at once.

    Overlapping Redis round trips pays, but each one in flight holds a pooled
    connection, and the pool is finite (hundreds at once ran it out).
    """
    room = asyncio.Semaphore(limit)

    async def one(coro: Coroutine[Any, Any, T]) -> T:
        async with room:
            return await coro

    try:
        return list(await asyncio.gather(*(one(c) for c in coros)))
    finally:
        # Cancelled (a stream whose client went away), the ones still waiting for room never ran: closed,
        # they are not "never awaited" (a warning at collection). Closing one that ended does nothing.
        for coro in coros:
            coro.close()
