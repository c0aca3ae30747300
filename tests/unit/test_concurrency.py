"""at_most, the bounded gather the servicers fan out over Redis with (server/concurrency.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings

from fanout.server.concurrency import at_most


def test_a_cancelled_at_most_leaves_no_coroutine_never_awaited() -> None:
    """A WatchMany stream cancelled mid-recheck (its client went away) left the coroutines still waiting
    for room never awaited. Python warns of each one when it is collected, and pytest made that warning
    a failure of whatever test was running then."""

    async def cancelled_while_one_runs() -> None:
        started = asyncio.Event()

        async def slow() -> int:
            started.set()
            await asyncio.sleep(30)
            return 0

        async def quick() -> int:
            return 1

        task = asyncio.create_task(at_most(1, [slow(), quick(), quick()]))
        await started.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(cancelled_while_one_runs())
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


def test_at_most_gives_every_result_in_order() -> None:
    async def value(x: int) -> int:
        await asyncio.sleep(0.001 * (5 - x))
        return x

    assert asyncio.run(at_most(2, [value(x) for x in range(5)])) == [0, 1, 2, 3, 4]
