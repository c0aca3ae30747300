"""The benchmarks' tasks: a no-op, and a parent that fans it out N times.

Two environments with the same tasks: `reused` runs its actions on a pool of
reusable workers (a ReusePolicy), `per_action` starts a worker per action.
Loaded by file (`load_task("file:...")`), so the workers find it by path.

A fanout returns a summary, not its N results (a million results would be
over the payload limit): how many came back, their sum (which checks them),
the peak RSS (VmHWM) of the process that ran the parent, read inside it, and
that process's command line (a reusable worker's or a one-shot worker's).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import fanout

# Whether this SDK has reusable workers; without them both environments start a worker per action.
REUSE = getattr(fanout, "ReusePolicy", None)
REPLICAS = 2  # one per core
CONCURRENCY = 2_000  # no-ops wait on nothing: many at once keep a worker's event loop busy
IDLE_TTL = 300  # seconds: the pool outlives the pauses between the benchmark's runs

reused = (
    fanout.TaskEnvironment(
        name="bench_reused", reusable=REUSE(replicas=REPLICAS, concurrency=CONCURRENCY, idle_ttl=IDLE_TTL)
    )
    if REUSE is not None
    else fanout.TaskEnvironment(name="bench_reused")
)
per_action = fanout.TaskEnvironment(name="bench_per_action")


def peak_rss_kb() -> int:
    """This process's peak resident set size, in kB (VmHWM of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def runner() -> str:
    """What runs this action: `-m fanout.dispatch.worker` (reusable), `... --one-shot` or the fork server's child."""
    argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    return " ".join(a.decode(errors="replace") for a in argv[1:3])


async def _fan(child: Any, n: int) -> dict[str, Any]:
    results = await asyncio.gather(*(child(i) for i in range(n)))
    return {"count": len(results), "sum": sum(results), "peak_rss_kb": peak_rss_kb(), "runner": runner()}


@reused.task
async def noop(i: int) -> int:
    return i


@reused.task
async def brief(i: int) -> int:
    """Runs on past its first step, so its worker says it runs and it gets a RUNNING report (bench/latency.py)."""
    await asyncio.sleep(0.005)
    return i


@reused.task
async def fan(n: int) -> dict[str, Any]:
    return await _fan(noop, n)


@per_action.task
async def noop_per_action(i: int) -> int:
    return i


@per_action.task
async def fan_per_action(n: int) -> dict[str, Any]:
    return await _fan(noop_per_action, n)


@reused.task
async def nested_fan(parents: int, children: int) -> dict[str, Any]:
    """A nested fanout: `parents` parents at once, each gathering `children` no-ops; all on reusable workers."""
    summaries = await asyncio.gather(*(fan(children) for _ in range(parents)))
    count = sum(s["count"] for s in summaries)
    total = sum(s["sum"] for s in summaries)
    return {"count": count, "sum": total, "peak_rss_kb": peak_rss_kb(), "runner": runner()}
