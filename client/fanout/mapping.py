"""`fanout.map`, Flyte 2's `flyte.map`: one task over zipped inputs, results in input order.

At most `concurrency` calls are in flight and at most that many results are
held, so memory follows `concurrency`, not the length of the inputs (which
are read lazily). A call that starts is a child action when made inside a
running action (see controller.py), a plain local call elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from fanout import controller
from fanout.groups import group
from fanout.task import Task


def _task_of(func: Any) -> tuple[Task[Any, Any], tuple[Any, ...], dict[str, Any]]:
    """The task `func` calls, with the arguments a functools.partial binds ahead of the mapped ones."""
    if isinstance(func, Task):
        return func, (), {}
    if isinstance(func, functools.partial) and isinstance(func.func, Task):
        return func.func, tuple(func.args), dict(func.keywords)
    raise TypeError(f"map() needs a task or a functools.partial of a task, not {type(func).__name__}")


def _check(func: Any, concurrency: int) -> Task[Any, Any]:
    task, _, _ = _task_of(func)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 0:
        raise ValueError(f"concurrency must be an int >= 0 (0: all at once), not {concurrency!r}")
    return task


async def _map_async(
    func: Callable[..., Awaitable[Any]],
    iterables: tuple[Iterable[Any], ...],
    group_name: str | None,
    concurrency: int,
    return_exceptions: bool,
) -> AsyncGenerator[Any, None]:
    task, bound_args, bound_kwargs = _task_of(func)
    limit = concurrency or math.inf
    calls = zip(*iterables, strict=False)
    window: deque[asyncio.Future[Any]] = deque()
    try:
        while True:
            while len(window) < limit:
                args = next(calls, None)
                if args is None:
                    break
                # Checked here, before submission: a bad item fails in the caller, not in a child.
                task.check_arguments(bound_args + args, bound_kwargs)
                # The group wraps only the start: asyncio tasks keep the context they are created in.
                with group(group_name) if group_name else contextlib.nullcontext():
                    window.append(asyncio.ensure_future(func(*args)))
            if not window:
                return
            head = window.popleft()
            try:
                value = await head
            except Exception as exc:
                if not return_exceptions:
                    raise
                value = exc
            yield value
    finally:
        for pending in window:  # stopped early (an error, or the caller left): wait for nothing more
            pending.cancel()


class _Map:
    """Callable as `fanout.map(...)` (a blocking generator) and as `fanout.map.aio(...)` (an async generator)."""

    def __call__(
        self,
        func: Callable[..., Awaitable[Any]],
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        _check(func, concurrency)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise TypeError("fanout.map() blocks; in async code use `async for result in fanout.map.aio(...)`")
        if controller.current() is not None:
            raise TypeError("fanout.map() cannot drive child actions from this thread; use fanout.map.aio(...)")
        return _drive(_map_async(func, iterables, group_name, concurrency, return_exceptions))

    def aio(
        self,
        func: Callable[..., Awaitable[Any]],
        *iterables: Iterable[Any],
        group_name: str | None = None,
        concurrency: int = 0,
        return_exceptions: bool = False,
    ) -> AsyncIterator[Any]:
        _check(func, concurrency)
        return _map_async(func, iterables, group_name, concurrency, return_exceptions)


def _drive(results: AsyncGenerator[Any, None]) -> Iterator[Any]:
    """The async generator's items, one at a time, on an event loop of its own."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(results))
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(results.aclose())
        loop.close()


map = _Map()
