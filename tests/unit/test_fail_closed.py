"""Fail closed turns Redis trouble into Unavailable, but never a cancel into an outage."""

from __future__ import annotations

import asyncio

import pytest
import redis.exceptions

from fanout.quota.errors import Unavailable
from fanout.quota.failclosed import fail_closed


@fail_closed
async def read_that_takes_the_cancel_for_a_timeout(started: asyncio.Event) -> None:
    """What redis-py sometimes does when a cancel lands mid-read (seen as a server whose stop hung)."""
    started.set()
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        raise redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379") from None


@fail_closed
async def read_of_a_stalled_redis() -> None:
    raise redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379")


def test_a_cancel_that_comes_out_of_redis_py_as_a_timeout_is_still_a_cancel() -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(read_that_takes_the_cancel_for_a_timeout(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_timeout_with_no_cancel_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="state store unreachable"):
        asyncio.run(read_of_a_stalled_redis())
