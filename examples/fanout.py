"""The fanout example: fetch data for many users in parallel, one action per user.

Written against the Flyte 2 shape: change `import fanout as flyte` to
`import flyte` and it runs there too.

    fanout up -- python -P examples/fanout.py          # ids 1-5
    fanout up -- python -P examples/fanout.py 50       # ids 1-50

(-P keeps this file, named fanout.py, from shadowing the fanout package.)
"""

import asyncio
import sys

import fanout as flyte

env = flyte.TaskEnvironment(name="fanout_env")


@env.task
async def fetch_data(user_id: int) -> dict:
    """Stand-in for a slow API call."""
    await asyncio.sleep(0.1)
    return {
        "user_id": user_id,
        "name": f"User_{user_id}",
        "score": user_id * 10,
        "data": f"Sample data for user {user_id}",
    }


@env.task
async def parallel_data_fetching(user_ids: list[int]) -> list[dict]:
    # Every call is an action in its own container; gather waits for them all.
    tasks = [fetch_data(user_id) for user_id in user_ids]
    return await asyncio.gather(*tasks)


if __name__ == "__main__":
    flyte.init_from_config()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    r = flyte.run(parallel_data_fetching, list(range(1, count + 1)))
    print(r.name)
    print(r.url)
    r.wait()
    for row in r.outputs():
        print(row)
