"""Tasks the docker backend's tests run in real containers.

Every environment names the test image (built by conftest.py: the runtime
image plus this file at the same absolute path), so these tasks also prove
that TaskEnvironment(image=...) decides what a container starts from: the
runtime image alone has no such file.
"""

import asyncio
import os
from pathlib import Path

import fanout

IMAGE = "fanout-test-tasks:dev"

env = fanout.TaskEnvironment(name="containers_seed", image=IMAGE)
pooled = fanout.TaskEnvironment(
    name="containers_pooled", image=IMAGE, reusable=fanout.ReusePolicy(replicas=2, concurrency=8)
)
small = fanout.TaskEnvironment(name="containers_small", image=IMAGE, resources=fanout.Resources(memory="128Mi"))
small_pooled = fanout.TaskEnvironment(
    name="containers_small_pooled",
    image=IMAGE,
    resources=fanout.Resources(memory="128Mi", cpu="500m"),
    reusable=fanout.ReusePolicy(replicas=1, concurrency=2),
)

# An image no engine has: its actions fail, saying which image.
nowhere = fanout.TaskEnvironment(name="containers_nowhere", image="fanout-no-such-image:never")

# An image without the runtime (the bare base): its worker cannot start, and says why.
bare = fanout.TaskEnvironment(name="containers_bare", image="fanout-base:bookworm")


# The seed fanout (examples/fanout.py), one container per action.
@env.task
async def fetch_data(user_id: int) -> dict:
    await asyncio.sleep(0.1)
    return {"user_id": user_id, "name": f"User_{user_id}", "score": user_id * 10}


@env.task
async def parallel_data_fetching(user_ids: list[int]) -> list[dict]:
    return await asyncio.gather(*(fetch_data(user_id) for user_id in user_ids))


# The same fanout on a reusable pool: two containers, eight actions each at once.
@pooled.task
async def pooled_fetch(user_id: int) -> dict:
    await asyncio.sleep(0.1)
    return {"user_id": user_id, "host": os.environ.get("HOSTNAME", "")}


@env.task
async def pooled_fanout(user_ids: list[int]) -> list[dict]:
    return await asyncio.gather(*(pooled_fetch(user_id) for user_id in user_ids))


@small.task
async def hog(megabytes: int) -> int:
    """Write `megabytes` of memory: past the container's 128 MiB limit the kernel kills it."""
    block = b"x" * (megabytes << 20)
    return len(block)


@small_pooled.task
async def pooled_hog(megabytes: int) -> int:
    """As hog, in a replica of a reusable environment: the replica is killed, the action fails as OOM."""
    block = b"x" * (megabytes << 20)
    return len(block)


@env.task
async def sleeper(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@env.task
async def sleepy_fan(count: int, seconds: float) -> list[float]:
    return await asyncio.gather(*(sleeper(seconds + i / 1000) for i in range(count)))


@env.task
async def look_around() -> dict:
    """What an action sees of its container: its uid, its environment's names, its mounts."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    return {"uid": os.getuid(), "env": sorted(os.environ), "mounts": mounts}


@nowhere.task
async def lost() -> int:
    return 1


@bare.task
async def unstartable() -> int:
    return 1


# An image the SDK builds (fanout.Image, fanout.build): the runtime image with a variable and a file
# of its own. The task's code is not in it: it is shipped as a bundle, like any run's.
BUILT = (
    fanout.Image.from_base("fanout-runtime:dev")
    .with_env_vars({"FANOUT_IMAGE_TEST": "built"})
    .with_commands(["echo from-the-image > /opt/fanout-marker"])
)
built = fanout.TaskEnvironment(name="containers_built", image=BUILT)


@built.task
async def read_image() -> list[str]:
    return [os.environ.get("FANOUT_IMAGE_TEST", ""), Path("/opt/fanout-marker").read_text().strip()]
