"""Redis trouble becomes Unavailable: the server fails closed, never admits unaccounted."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import redis.exceptions

from fanout.quota.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")


def fail_closed(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise_if_cancelling(exc)
            raise Unavailable(f"state store unreachable: {exc}") from exc

    return wrapper


def raise_if_cancelling(cause: BaseException | None = None) -> None:
    """Raise CancelledError if the current task has a cancel pending.

    A cancel that lands while redis-py reads a reply can come out of it as a read
    timeout (or a blocking read that returns nothing), not as CancelledError. A
    loop that runs until cancelled would take that for an outage and go on,
    never to stop: seen as a server whose stop hung. So the cancel wins.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
