"""The longest single Redis command while big jobs run: Redis runs one command at a time, so one long
script stalls every tenant, every server and every dispatcher.

How: a private Redis (`RedisProcess`) and `fanout server` as a subprocess, as in bench/admission.py.
Before each step SLOWLOG is reset with a threshold of 0 µs (every command is logged); after it the
longest entry is read back with its command (a script is named from its SHA). The threshold
is THRESHOLD_US, not 0: SLOWLOG also logs every command a script runs, and logging thousands of
them inside one script would add their cost to that script's time; nothing under a millisecond
can be the longest command anyway. The steps:

1. one SubmitBatch of 100,000 actions through the gRPC server;
2. AbortRun of a run holding 300,001 actions (root + 3 batches of 100,000, admitted before the step);
3. leasing that aborted run's tenant after the abort (through the quota store, as the dispatch service
   does), until the tenant has nothing left to lease;
4. with RENEWED actions of another run leased, one heartbeat renewing all their leases, then one
   report of all their outcomes (through the quota store, as one Report RPC of a dispatcher would).

Each step's wall time is printed too. Figures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from bench.lone_server import SERVER_MODE, lone_server
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.errors import FanoutError
from fanout.quota.actions import ActionStore, LeasedAction, LeaseRef, Report
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.scripts import Scripts, source
from fanout.v1 import actions_pb2 as pb

ADMISSION = 100_000
ABORT_BATCHES = 3  # of ADMISSION children each, under one root: 300,001 actions
LEASE_WANT = 64
LEASE_MAX_CALLS = 10_000  # a bound on the lease loop, far above what it needs
THRESHOLD_US = 1_000
RENEWED = 20_000
SLOWLOG_MAX_LEN = 100_000


@dataclass(frozen=True)
class Step:
    name: str
    wall_s: float
    longest_us: int  # the longest single command Redis ran during the step
    longest_command: str
    commands: int  # commands over THRESHOLD_US during the step
    error: str  # what the caller got when the step failed (the work may still have happened)


@dataclass(frozen=True)
class Slowlog:
    server: str
    steps: list[Step]


def specs(prefix: str, n: int) -> list[pb.ActionSpec]:
    inputs = b'{"args":[1],"kwargs":{}}'
    return [pb.ActionSpec(name=f"{prefix}{i}", task_ref="module:bench:noop", inputs=inputs) for i in range(n)]


def run() -> Slowlog:
    with lone_server("fanout-bench-slowlog-") as server, redis.Redis.from_url(server.redis_url) as r:
        steps = []
        with Client(ClientConfig(endpoint=server.endpoint, token=server.tenant_token("admit"))) as client:
            run = client.create_run(pb.ActionSpec(name="root", task_ref="module:x:y"))
            batch = specs("c", ADMISSION)
            steps.append(
                _measure(r, f"SubmitBatch of {ADMISSION:,}", lambda: client.submit_batch(run.name, "root", batch))
            )
        with Client(ClientConfig(endpoint=server.endpoint, token=server.tenant_token("abort"))) as client:
            run = client.create_run(pb.ActionSpec(name="root", task_ref="module:x:y"))
            for b in range(ABORT_BATCHES):
                client.submit_batch(run.name, "root", specs(f"b{b}x", ADMISSION))
            total = 1 + ABORT_BATCHES * ADMISSION
            steps.append(_measure(r, f"AbortRun of {total:,} actions", lambda: client.abort_run(run.name, "bench")))
        asyncio.run(_lease_all(server.redis_url, "warmup"))  # loads lease.lua, so SCRIPT LOAD is not measured
        steps.append(_measure(r, "lease after the abort", lambda: asyncio.run(_lease_all(server.redis_url, "abort"))))
        with Client(ClientConfig(endpoint=server.endpoint, token=server.tenant_token("renew"))) as client:
            run = client.create_run(pb.ActionSpec(name="root", task_ref="module:x:y"))
            client.submit_batch(run.name, "root", specs("r", RENEWED))
        held = [a for a in asyncio.run(_lease_all(server.redis_url, "renew", RENEWED + 1)) if a.parent]
        steps.append(
            _measure(r, f"heartbeat of {len(held):,} leases", lambda: asyncio.run(_renew(server.redis_url, held)))
        )
        steps.append(
            _measure(r, f"Report of {len(held):,} outcomes", lambda: asyncio.run(_report(server.redis_url, held)))
        )
        return Slowlog(SERVER_MODE, steps)


async def _lease_all(url: str, tenant: str, concurrency: int = Limits.max_concurrency) -> list[LeasedAction]:
    """Lease as the dispatch service does until a lease finds nothing (at most LEASE_MAX_CALLS calls)."""
    client = aioredis.Redis.from_url(url)
    try:
        store = _store(client, concurrency)
        leased: list[LeasedAction] = []
        for _ in range(LEASE_MAX_CALLS):
            more = await store.lease(tenant, LEASE_WANT)
            if not more:
                break
            leased += more
        return leased
    finally:
        await client.aclose()


async def _renew(url: str, held: list[LeasedAction]) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await _store(client).heartbeat(held[0].tenant, [LeaseRef(a.run, a.name, a.attempt) for a in held])
    finally:
        await client.aclose()


async def _report(url: str, held: list[LeasedAction]) -> None:
    result = pb.ActionResult(outputs=b"1").SerializeToString()
    client = aioredis.Redis.from_url(url)
    try:
        reports = [Report(a.run, a.name, a.attempt, pb.SUCCEEDED, result) for a in held]
        await _store(client).report(held[0].tenant, reports)
    finally:
        await client.aclose()


def _store(client: aioredis.Redis, concurrency: int = Limits.max_concurrency) -> ActionStore:
    """The quota store a server would use; `concurrency` is the tenants' default max_concurrency."""
    scripts = Scripts.register(client)
    return ActionStore(client, scripts, LimitStore(client, scripts, Limits(max_concurrency=concurrency)))


def _measure(r: redis.Redis, name: str, step: Callable[[], object]) -> Step:
    r.config_set("slowlog-max-len", SLOWLOG_MAX_LEN)
    r.config_set("slowlog-log-slower-than", THRESHOLD_US)
    r.slowlog_reset()
    error = ""
    start = time.perf_counter()
    try:
        step()
    except FanoutError as exc:
        error = f"{type(exc).__name__}: {exc}"
    wall = time.perf_counter() - start
    entries = r.slowlog_get(-1)
    r.config_set("slowlog-log-slower-than", 10_000)
    r.slowlog_reset()
    if not entries:
        return Step(name, wall, 0, f"none over {THRESHOLD_US} µs", 0, error)
    longest = max(entries, key=lambda e: int(e["duration"]))
    return Step(name, wall, int(longest["duration"]), _command_name(longest["command"]), len(entries), error)


def _script_names() -> dict[str, str]:
    return {hashlib.sha1(source(name).encode()).hexdigest(): name for name in Scripts.__dataclass_fields__}


def _command_name(command: bytes | str) -> str:
    text = command.decode(errors="replace") if isinstance(command, bytes) else command
    words = text.split()
    if len(words) >= 2 and words[0].upper() == "EVALSHA":
        return f"EVALSHA {_script_names().get(words[1].lower(), words[1][:12])}.lua"
    return " ".join(words[:2])[:60]


def table(report: Slowlog) -> str:
    rows = [
        (
            s.name,
            f"longest command {s.longest_us / 1000:.1f} ms ({s.longest_command}); "
            f"wall {s.wall_s:.2f} s; {s.commands:,} commands over {THRESHOLD_US / 1000:.0f} ms"
            + (f"; the caller got {s.error}" if s.error else ""),
        )
        for s in report.steps
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


if __name__ == "__main__":
    print(table(run()))
