"""Nested fanouts: each child fans out again. A parent waiting on its children holds no slot,
so deep trees cannot deadlock the tenant's concurrency."""

import asyncio

import flyte

env = flyte.TaskEnvironment(name="nested_example")


@env.task
async def leaf(region: str, shard: int) -> int:
    return len(region) * 100 + shard


@env.task
async def region_total(region: str, shards: int) -> int:
    return sum(await asyncio.gather(*(leaf(region, s) for s in range(shards))))


@env.task
async def main(regions: list[str], shards: int) -> dict[str, int]:
    totals = await asyncio.gather(*(region_total(r, shards) for r in regions))
    return dict(zip(regions, totals, strict=True))


if __name__ == "__main__":
    flyte.init_from_config()
    print(flyte.run(main, regions=["eu", "us", "apac"], shards=4).outputs())
