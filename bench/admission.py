"""Admission: the wall time of ONE SubmitBatch RPC of 10,000 and of 100,000 actions (median of REPEATS).

How: a private Redis (`RedisProcess`: appendonly yes, appendfsync everysec) and
`fanout server` as a subprocess, so the blocking gRPC client here and the server
do not share a GIL. No dispatcher runs, so nothing is leased: the figure is
admission and persistence only. Each batch goes to its own run (root action
created first); the specs are built before the timer starts, so the timer
covers request serialization, the RPC, admission in Redis and the response.
A small untimed batch warms the channel and Redis' script cache first.
Redis memory per queued action is what the batch's data takes, by MEMORY USAGE
(exact, SAMPLES 0): the run's spec, state, children and queue keys plus the growth
of the tenant's queue, divided by the batch size. (INFO used_memory would also
count the server's input buffer, which holds the whole request for a while.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from bench.lone_server import SERVER_MODE, lone_server
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.quota import keys
from fanout.v1 import actions_pb2 as pb

SIZES = (10_000, 100_000)
# A single batch on a 2-core machine swings by a third; the median of a few is steadier.
REPEATS = 3
WARMUP = 100
TENANT = "bench"


@dataclass(frozen=True)
class BatchFigure:
    actions: int
    wall_s: float  # the median of REPEATS batches, each one SubmitBatch
    per_action_us: float
    redis_bytes_per_action: float
    walls_s: list[float]  # every try, for the spread


@dataclass(frozen=True)
class Admission:
    server: str
    batches: list[BatchFigure]


def specs(n: int) -> list[pb.ActionSpec]:
    inputs = b'{"args":[1],"kwargs":{}}'
    return [pb.ActionSpec(name=f"c{i}", task_ref="module:bench:noop", inputs=inputs) for i in range(n)]


def run() -> Admission:
    with lone_server("fanout-bench-admission-") as server:
        token = server.tenant_token(TENANT)
        with (
            Client(ClientConfig(endpoint=server.endpoint, token=token)) as client,
            redis.Redis.from_url(server.redis_url) as r,
        ):
            _submit(client, r, WARMUP)
            return Admission(SERVER_MODE, [_median(client, r, n) for n in SIZES])


def _median(client: Client, r: redis.Redis, n: int) -> BatchFigure:
    tries = sorted((_submit(client, r, n) for _ in range(REPEATS)), key=lambda f: f.wall_s)
    middle = tries[len(tries) // 2]
    return BatchFigure(n, middle.wall_s, middle.per_action_us, middle.redis_bytes_per_action, [t.wall_s for t in tries])


def _submit(client: Client, r: redis.Redis, n: int) -> BatchFigure:
    """Time one SubmitBatch of `n` actions under a fresh run's root."""
    run = client.create_run(pb.ActionSpec(name="root", task_ref="module:x:y"))
    batch = specs(n)
    k = keys.TenantKeys(TENANT)
    queue_before = _memory(r, k.queue)
    start = time.perf_counter()
    response = client.submit_batch(run.name, "root", batch)
    wall = time.perf_counter() - start
    if response.admitted != n:
        raise RuntimeError(f"admitted {response.admitted} of {n} actions")
    run_keys = (k.specs(run.name), k.states(run.name), k.kids(run.name, "root"), k.run_queue(run.name))
    held = sum(_memory(r, key) for key in run_keys)
    held += _memory(r, k.queue) - queue_before
    return BatchFigure(n, wall, wall / n * 1e6, held / n, [wall])


def _memory(r: redis.Redis, key: str) -> int:
    return int(r.memory_usage(key, samples=0) or 0)


def table(report: Admission) -> str:
    return "\n".join(
        f"  SubmitBatch of {b.actions:>7,}  {b.wall_s * 1000:7.1f} ms  ({b.per_action_us:.1f} µs/action; "
        f"tries {', '.join(f'{w * 1000:.0f}' for w in b.walls_s)} ms)  {b.redis_bytes_per_action:.0f} B of Redis/action"
        for b in report.batches
    )


if __name__ == "__main__":
    print(table(run()))
