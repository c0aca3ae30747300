"""Groups label the actions created inside them (shown with the actions); they nest."""

import asyncio

import flyte

env = flyte.TaskEnvironment(name="groups_example")


@env.task
async def train(fold: int, lr: float) -> float:
    return round(1.0 / (fold + 1) + lr, 3)


@env.task
async def main(folds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with flyte.group("sweep"):
        for lr in (0.1, 0.01):
            with flyte.group(f"lr-{lr}"):
                results[str(lr)] = await asyncio.gather(*(train(f, lr) for f in range(folds)))
    return results


if __name__ == "__main__":
    flyte.init_from_config()
    print(flyte.run(main, folds=3).outputs())
