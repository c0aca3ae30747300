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

from fanout import errors, report
from fanout.context import TaskContext, ctx, version
from fanout.errors import (
    ActionFailed,
    FanoutError,
    FanoutLimitExceeded,
    QuotaExceeded,
    RunFailed,
)
from fanout.groups import group
from fanout.image import Image, build
from fanout.mapping import map
from fanout.policies import Backoff, RetryStrategy, Timeout
from fanout.runs import Run, RunContext, init, init_from_config, run, with_runcontext
from fanout.task import Resources, ReusePolicy, Task, TaskEnvironment
from fanout.traces import trace

__all__ = [
    "ActionFailed",
    "Backoff",
    "FanoutError",
    "FanoutLimitExceeded",
    "Image",
    "QuotaExceeded",
    "Resources",
    "RetryStrategy",
    "ReusePolicy",
    "Run",
    "RunContext",
    "RunFailed",
    "Task",
    "TaskContext",
    "TaskEnvironment",
    "Timeout",
    "__version__",
    "build",
    "ctx",
    "errors",
    "group",
    "init",
    "init_from_config",
    "map",
    "report",
    "run",
    "trace",
    "with_runcontext",
]

__version__ = version()
