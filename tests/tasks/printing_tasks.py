"""Tasks that print, for `fanout logs`: alone, failing, and many at once in one reusable worker."""

from __future__ import annotations

import asyncio
import sys

import fanout

env = fanout.TaskEnvironment(name="printing")
# One worker, so the pooled children below print at the same time in the same process.
shared = fanout.TaskEnvironment(
    name="printing_shared", reusable=fanout.ReusePolicy(replicas=1, concurrency=16, idle_ttl=5)
)


@env.task
async def chatty(tag: str) -> str:
    print(f"out {tag}")
    print(f"err {tag}", file=sys.stderr)
    return tag


@env.task
async def chatty_then_fails(tag: str) -> str:
    print(f"before failing {tag}")
    raise ValueError(tag)


@env.task
async def loud(size: int) -> int:
    sys.stdout.write("x" * size)
    return size


@shared.task
async def interleaved(tag: str) -> str:
    for i in range(3):
        print(f"{tag} line {i}")
        await asyncio.sleep(0.05)  # the other actions of the worker print meanwhile
    return tag


@shared.task
def from_a_thread(tag: str) -> str:
    print(f"{tag} from a thread")  # a plain def task: it runs in one of the worker's threads
    return tag


@shared.task
async def many_in_one_worker(tags: list[str]) -> list[str]:
    printing = [interleaved(t) for t in tags] + [from_a_thread(t) for t in tags]
    return await asyncio.gather(*printing)
