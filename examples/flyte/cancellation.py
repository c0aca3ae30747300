"""Cancellation: an await of a child that is cancelled aborts that child on the server at once."""

import asyncio

import flyte
import flyte.errors

env = flyte.TaskEnvironment(name="cancellation_example")


@env.task
async def slow(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@env.task
async def flaky() -> None:
    await asyncio.sleep(0.5)
    raise ValueError("flaky failed first")


@env.task
async def first_failure_wins() -> str:
    # The first failure raises here; this task then ends, and its unfinished children are aborted.
    await asyncio.gather(flaky(), slow(60), slow(60))
    return "unreachable"


@env.task(timeout=60)
async def main() -> list[str]:
    seen = []
    child = asyncio.create_task(slow(60))
    await asyncio.sleep(1)
    child.cancel()
    try:
        await child
    except asyncio.CancelledError:
        seen.append("cancelled")
    try:
        await asyncio.wait_for(slow(60), timeout=1)
    except TimeoutError:
        seen.append("gave up waiting")
    try:
        await first_failure_wins()
    except flyte.errors.RuntimeUserError as exc:
        seen.append(exc.code)
    return seen


if __name__ == "__main__":
    flyte.init_from_config()
    print(flyte.run(main).outputs())
