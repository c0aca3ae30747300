"""Tasks the kubernetes backend's tests run in pods (of the fake API server's kubelet: local processes)."""

import asyncio
import os

import fanout

env = fanout.TaskEnvironment(name="kube_seed")
pooled = fanout.TaskEnvironment(name="kube_pooled", reusable=fanout.ReusePolicy(replicas=2, concurrency=8))
small = fanout.TaskEnvironment(name="kube_small", resources=fanout.Resources(memory="128Mi", cpu="500m"))
# An image the kubelet cannot pull: its actions fail, saying so.
nowhere = fanout.TaskEnvironment(name="kube_nowhere", image="fanout-no-such-image:never")


# The seed fanout (examples/fanout.py), one pod per action.
@env.task
async def fetch_data(user_id: int) -> dict:
    await asyncio.sleep(0.1)
    return {"user_id": user_id, "name": f"User_{user_id}", "score": user_id * 10}


@env.task
async def parallel_data_fetching(user_ids: list[int]) -> list[dict]:
    return await asyncio.gather(*(fetch_data(user_id) for user_id in user_ids))


@pooled.task
async def pooled_fetch(user_id: int) -> dict:
    await asyncio.sleep(0.1)
    return {"user_id": user_id, "worker": os.environ.get("FANOUT_WORKER_ID", "")}


@env.task
async def pooled_fanout(user_ids: list[int]) -> list[dict]:
    return await asyncio.gather(*(pooled_fetch(user_id) for user_id in user_ids))


@small.task
async def hog(megabytes: int) -> int:
    """Write `megabytes` of memory: past the pod's 128 MiB limit it is killed."""
    block = b"x" * (megabytes << 20)
    await asyncio.sleep(1)  # held, as a real task would: the kubelet sees it
    return len(block)


@env.task
async def sleeper(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@nowhere.task
async def unreachable() -> int:
    return 1
