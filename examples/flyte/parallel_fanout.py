"""Fan out with asyncio.gather: every call of a task is an action of its own, run in parallel."""

import asyncio

import flyte

env = flyte.TaskEnvironment(name="fanout_example", resources=flyte.Resources(cpu=1, memory="250Mi"))


@env.task
async def fetch_user(user_id: int) -> dict[str, object]:
    await asyncio.sleep(0.05)  # stands in for a call to a slow service
    return {"user_id": user_id, "name": f"user-{user_id}", "score": user_id * 10}


@env.task
async def main(user_ids: list[int]) -> dict[str, object]:
    users = await asyncio.gather(*(fetch_user(u) for u in user_ids))
    return {"count": len(users), "total_score": sum(int(str(u["score"])) for u in users)}


if __name__ == "__main__":
    flyte.init_from_config()
    run = flyte.run(main, user_ids=list(range(1, 11)))
    print(run.name, run.url)
    print(run.outputs())
