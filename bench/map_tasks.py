"""Tasks of the map memory benchmark: a parent that maps a no-op over n inputs, and one that gathers them.

The parents run in a process of their own (no ReusePolicy), so the peak RSS they read
(VmHWM) is the parent's alone; the no-ops run on reusable workers to keep the run short.
"""

from __future__ import annotations

import asyncio
from typing import Any

import fanout
from bench.tasks import peak_rss_kb

children = fanout.TaskEnvironment(name="bench_map_children", reusable=fanout.ReusePolicy(replicas=2, concurrency=500))
parents = fanout.TaskEnvironment(name="bench_map_parents")


@children.task
async def noop(i: int) -> int:
    return i


@parents.task
async def mapped(n: int, concurrency: int) -> dict[str, Any]:
    total = count = 0
    async for r in fanout.map.aio(noop, range(n), concurrency=concurrency):
        total += r
        count += 1
    return {"count": count, "sum": total, "peak_rss_kb": peak_rss_kb()}


@parents.task
async def gathered(n: int) -> dict[str, Any]:
    results = await asyncio.gather(*(noop(i) for i in range(n)))
    return {"count": len(results), "sum": sum(results), "peak_rss_kb": peak_rss_kb()}
