"""Fanout: fan out async Python tasks, each call an action in its own container.

import fanout

env = fanout.TaskEnvironment("my_env")

@env.task
async def square(x: int) -> int:
    return x * x

@env.task
async def main(n: int) -> list[int]:
    return await asyncio.gather(*(square(i) for i in range(n)))

fanout.init_from_config()
print(fanout.run(main, 10).outputs())
"""

from fanout.errors import (
    ActionFailed,
    FanoutError,
    FanoutLimitExceeded,
    QuotaExceeded,
    RunFailed,
)
from fanout.runs import Run, init, init_from_config, run
from fanout.task import Resources, ReusePolicy, Task, TaskEnvironment

__all__ = [
    "ActionFailed",
    "FanoutError",
    "FanoutLimitExceeded",
    "QuotaExceeded",
    "Resources",
    "ReusePolicy",
    "Run",
    "RunFailed",
    "Task",
    "TaskEnvironment",
    "init",
    "init_from_config",
    "run",
]
