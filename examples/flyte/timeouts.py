"""Timeouts: seconds, a timedelta, or flyte.Timeout(max_runtime=..., max_queued_time=...)."""

import asyncio
from datetime import timedelta

import flyte
import flyte.errors

env = flyte.TaskEnvironment(name="timeouts_example")


@env.task(timeout=flyte.Timeout(max_runtime=timedelta(seconds=1), max_queued_time=timedelta(minutes=10)))
async def bounded(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@env.task(timeout=30)
async def main() -> list[str]:
    outcomes = await asyncio.gather(bounded(0.1), bounded(20), return_exceptions=True)
    return [o if isinstance(o, str) else type(o).__name__ for o in outcomes]


if __name__ == "__main__":
    flyte.init_from_config()
    print(flyte.run(main).outputs())
