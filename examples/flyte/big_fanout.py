"""A big fanout where some children fail: return_exceptions keeps the successes,
with asyncio.gather and with flyte.map."""

import asyncio

import flyte
import flyte.errors

env = flyte.TaskEnvironment(name="big_fanout_example")


@env.task
async def score(item: int) -> int:
    if item % 50 == 49:
        raise ValueError(f"item {item} is corrupt")
    return item % 7


@env.task
async def main(n: int) -> dict[str, int]:
    gathered = await asyncio.gather(*(score(i) for i in range(n)), return_exceptions=True)
    mapped = [r async for r in flyte.map.aio(score, range(n), concurrency=50, return_exceptions=True)]
    failed = [r for r in gathered if isinstance(r, flyte.errors.RuntimeUserError)]
    return {
        "succeeded": sum(1 for r in gathered if isinstance(r, int)),
        "failed": len(failed),
        "map_failed": sum(1 for r in mapped if isinstance(r, Exception)),
        "total": sum(r for r in gathered if isinstance(r, int)),
    }


if __name__ == "__main__":
    flyte.init_from_config()
    print(flyte.run(main, n=500).outputs())
