"""Tasks for the abort, cancellation and max_queued_time tests, run by file path."""

import asyncio
import time

import fanout
from fanout import errors

env = fanout.TaskEnvironment(name="aborts")


@env.task
async def sleeper(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@env.task
async def fails_after(seconds: float) -> None:
    await asyncio.sleep(seconds)
    raise ValueError("first failure")


@env.task
async def middle(children: int, seconds: float) -> list[float]:
    """A parent with descendants of its own: what `fanout abort RUN ACTION` stops as a whole."""
    return list(await asyncio.gather(*(sleeper(seconds) for _ in range(children))))


@env.task
async def awaits_an_aborted_child() -> list[str]:
    """Awaits a child that the test aborts from outside; reports what the await raised."""
    try:
        await middle(2, 120)
    except errors.ActionAbortedError as exc:
        return [type(exc).__name__, exc.phase]
    return ["not aborted"]


@env.task
async def cancels_a_child(running_for: float, linger: float) -> float:
    """Cancels the task awaiting a running child, then stays running itself: returns when it cancelled."""
    child = asyncio.create_task(sleeper(120))
    await asyncio.sleep(running_for)
    cancelled_at = time.time()
    child.cancel()
    try:
        await child
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(linger)
    return cancelled_at


@env.task
async def gathers_with_a_failure() -> None:
    """A plain gather: the first failure raises here, and this parent ends with it."""
    await asyncio.gather(fails_after(2), sleeper(120), sleeper(120))


@env.task
async def outlives_a_failed_gather(linger: float) -> float:
    """Stays running after its child's gather failed, so only that failure can abort the siblings."""
    try:
        await gathers_with_a_failure()
    except errors.RuntimeUserError:
        failed_at = time.time()
    await asyncio.sleep(linger)
    return failed_at


@env.task
async def queues_past_its_limit(first: float) -> list[str]:
    """With max_concurrency 1: the second child waits for the first longer than its max_queued_time."""
    patient = sleeper(first)
    impatient = sleeper.override(timeout=fanout.Timeout(max_runtime=60, max_queued_time=1))(0.1)
    outcomes = await asyncio.gather(patient, impatient, return_exceptions=True)
    return [type(o).__name__ for o in outcomes]


# The same cancellation inside a reusable worker: the abort goes out on the parent's own token
# over the channel the worker's actions share.
reused = fanout.TaskEnvironment(
    name="aborts_reused", reusable=fanout.ReusePolicy(replicas=1, concurrency=8, idle_ttl=5)
)


@reused.task
async def sleeper_reused(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@reused.task
async def cancels_a_child_reused(running_for: float, linger: float) -> float:
    async with asyncio.TaskGroup() as group:
        child = group.create_task(sleeper_reused(120))
        await asyncio.sleep(running_for)
        cancelled_at = time.time()
        child.cancel()
    await asyncio.sleep(linger)
    return cancelled_at
