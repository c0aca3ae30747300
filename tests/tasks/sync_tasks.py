"""Plain `def` tasks (no async), for tests/integration/test_workers.py.

They block on purpose (time.sleep): a worker runs them in its thread pool,
so they must neither stall its event loop nor each other.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import fanout

# No ReusePolicy: a one-shot worker per action.
own_env = fanout.TaskEnvironment(name="sync_own_env")
sync_pool = fanout.TaskEnvironment(name="sync_pool", reusable=fanout.ReusePolicy(replicas=1, concurrency=8, idle_ttl=5))
WAIT_SECONDS = 30.0


def _wait_for(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {WAIT_SECONDS}s")
        time.sleep(0.01)  # blocks this thread, never the worker's event loop


@sync_pool.task
def meet(folder: str, n: int) -> int:
    """Arrive, then block until `n` tasks have arrived: only n tasks running at once can all return."""
    Path(folder, str(os.getpid()) + "-" + os.urandom(4).hex()).touch()
    _wait_for(lambda: len(os.listdir(folder)) >= n, f"{n} tasks at once")
    return os.getpid()


@sync_pool.task
async def meet_fan(folder: str, n: int) -> list[int]:
    return list(await asyncio.gather(*(meet(folder, n) for _ in range(n))))


@sync_pool.task
def block_until(marker: str) -> int:
    _wait_for(lambda: os.path.exists(marker), f"{marker} to appear")
    return os.getpid()


@sync_pool.task
async def release(marker: str) -> int:
    for _ in range(5):
        await asyncio.sleep(0.02)  # needs the event loop that block_until shares
    Path(marker).touch()
    return os.getpid()


@sync_pool.task
async def block_and_release(marker: str) -> list[int]:
    return list(await asyncio.gather(block_until(marker), release(marker)))


@own_env.task
def double(x: int) -> int:
    return 2 * x


@own_env.task
def double_each(n: int) -> list[int]:
    """A plain task calling tasks: each call blocks its thread until the child action finished."""
    return [double(i) for i in range(n)]


@sync_pool.task
def chatter(lines: int) -> str:
    """Print a lot, then say how big this worker's log is once its keeper had time to cut it."""
    for i in range(lines):
        print(f"line {i:08d} " + "x" * 80)
    print("the last line", file=sys.stderr)
    time.sleep(1.0)
    return f"{os.fstat(2).st_size}"
