"""The docker benchmark's tasks: no-op children fanned out by a parent, per action and on a pool.

A parent returns, per child, the seconds from submitting it to its code
starting (the child reads the clock first thing): start-to-running as a
task sees it, the admission, the lease, the worker's start and the hand-over.

Both environments name the benchmark image (the runtime image plus this file at
its path here, built by bench/docker_backend.py); the process backend ignores
the image, so the same tasks run on both backends.
"""

from __future__ import annotations

import asyncio
import time

import fanout

IMAGE = "fanout-bench-tasks:dev"

per_action = fanout.TaskEnvironment(name="bench_docker_per_action", image=IMAGE)
pooled = fanout.TaskEnvironment(
    name="bench_docker_pooled", image=IMAGE, reusable=fanout.ReusePolicy(replicas=2, concurrency=256, idle_ttl=300)
)


@per_action.task
async def noop_per_action(i: int) -> float:
    return time.time()  # when its code started: containers share the host's clock


@per_action.task
async def fan_per_action(n: int) -> list[float]:
    """Seconds from submitting each child to its code starting."""
    submitted = time.time()
    return [started - submitted for started in await asyncio.gather(*(noop_per_action(i) for i in range(n)))]


@pooled.task
async def noop_pooled(i: int) -> float:
    return time.time()


@pooled.task
async def fan_pooled(n: int) -> list[float]:
    submitted = time.time()
    return [started - submitted for started in await asyncio.gather(*(noop_pooled(i) for i in range(n)))]
