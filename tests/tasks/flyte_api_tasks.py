"""Tasks for the Flyte-shaped API tests (errors, retries, timeouts, map, groups), run by file path."""

import asyncio
import functools
import os

import fanout
from fanout import errors

env = fanout.TaskEnvironment(name="flyte_api")


@env.task
async def nap(x: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return x


@env.task
async def boom(x: int) -> int:
    raise KeyError(f"no item {x}")


@env.task
async def error_kinds() -> list[str]:
    """What a parent sees of a child's failure and of a child's timeout."""
    seen: list[str] = []
    try:
        await boom(7)
    except errors.RuntimeUserError as exc:
        seen += ["RuntimeUserError", exc.code, exc.message]
    try:
        await nap.override(timeout=1)(0, 30)
    except errors.TaskTimeoutError as exc:
        seen += ["TaskTimeoutError", exc.code]
    return seen


@env.task(retries=3)
async def hopeless() -> int:
    raise errors.NonRecoverableError("the input can never work")


@env.task(retries=fanout.RetryStrategy(count=2, backoff=fanout.Backoff(base=1.2, factor=2.0, cap=1.5)))
async def always_fails() -> int:
    raise RuntimeError("still broken")


@env.task
async def bounded_map(n: int, concurrency: int, seconds: float) -> list[int]:
    naps = functools.partial(nap, seconds=seconds)
    return [x async for x in fanout.map.aio(naps, range(n), concurrency=concurrency)]


@env.task
async def boom_if_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


@env.task
async def map_keeping_errors(n: int) -> list[object]:
    out: list[object] = []
    async for r in fanout.map.aio(boom_if_odd, range(n), concurrency=3, return_exceptions=True):
        out.append(r.code if isinstance(r, errors.RuntimeUserError) else r)
    return out


@env.task
async def map_raising(n: int) -> str:
    try:
        async for _ in fanout.map.aio(boom_if_odd, range(n), concurrency=2):
            pass
    except errors.RuntimeUserError as exc:
        return exc.message
    return "no error"


@env.task
async def grouped() -> list[int]:
    with fanout.group("outer"):
        with fanout.group("inner"):
            first = await nap(1, 0)
        rest = await asyncio.gather(nap(2, 0), nap(3, 0))
    return [first, *rest, await nap(4, 0)]


@env.task
async def read_env(name: str) -> str:
    return os.environ.get(name, "")


@env.task
async def whoami() -> list[str]:
    context = fanout.ctx()
    assert context is not None
    return [context.action.run_name, context.action.name, context.mode]


small = fanout.TaskEnvironment(name="flyte_api_small", resources=fanout.Resources(memory="200Mi"))


@small.task
async def allocate(mib: int) -> int:
    block = bytearray(mib << 20)
    return len(block) >> 20


@env.task
async def oom_then_more_memory(mib: int) -> list[object]:
    """Flyte's OOM pattern: the first try hits its memory limit; the retry asks for more."""
    try:
        return [await allocate(mib)]
    except errors.OOMError as exc:
        bigger = allocate.override(resources=fanout.Resources(memory=f"{mib + 300}Mi"))
        return [type(exc).__name__, exc.code, await bigger(mib)]


@env.task
async def map_leaves_nothing_behind(n: int, concurrency: int) -> list[int]:
    """How many child statuses the parent still holds after mapping over n inputs (its memory's share)."""
    from fanout import controller

    count = 0
    async for _ in fanout.map.aio(functools.partial(nap, seconds=0.0), range(n), concurrency=concurrency):
        count += 1
    active = controller.current()
    assert active is not None
    return [count, len(active._finished)]


@env.task
async def map_in_group(n: int) -> list[int]:
    with fanout.group("outer"):
        naps = functools.partial(nap, seconds=0.0)
        return [x async for x in fanout.map.aio(naps, range(n), group_name="batch", concurrency=2)]


@env.task
async def forwarded_double(x: int) -> int:
    return 2 * x


@env.task
def forwarded_plain_inc(x: int) -> int:
    return x + 1


@env.task
async def forwards(x: int) -> int:
    """Both forms of task.forward: run here, in this action, with no child action."""
    return forwarded_plain_inc.forward(await forwarded_double.forward(x))
