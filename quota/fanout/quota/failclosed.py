"""Redis trouble becomes Unavailable: the server fails closed, never admits unaccounted."""

from __future__ import annotations

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
            raise Unavailable(f"state store unreachable: {exc}") from exc

    return wrapper
