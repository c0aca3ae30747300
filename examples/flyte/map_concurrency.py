"""Control parallelism: flyte.map with a concurrency cap, and a semaphore around asyncio.gather."""

import asyncio
import functools

import flyte

env = flyte.TaskEnvironment(name="map_example")


@env.task
async def resize(image_id: int, width: int) -> str:
    await asyncio.sleep(0.05)
    return f"image-{image_id}@{width}px"


@env.task
async def with_map(n: int) -> list[str]:
    # At most 4 children run at once; results come back in input order.
    thumbnails = functools.partial(resize, width=128)
    return [r async for r in flyte.map.aio(thumbnails, range(n), concurrency=4)]


@env.task
async def with_semaphore(n: int) -> list[str]:
    limit = asyncio.Semaphore(4)

    async def bounded(i: int) -> str:
        async with limit:
            return await resize(i, 256)

    return await asyncio.gather(*(bounded(i) for i in range(n)))


@env.task
async def main(n: int) -> dict[str, list[str]]:
    mapped, gathered = await asyncio.gather(with_map(n), with_semaphore(n))
    return {"map": mapped, "semaphore": gathered}


if __name__ == "__main__":
    flyte.init_from_config()
    print(flyte.run(main, n=12).outputs())
