"""One run of 1,000,000 no-op actions on reusable workers: it completes; its wall time, Redis' peak
memory and the parent's peak RSS. Long (minutes): `make bench-million`, not part of `make bench`.

How: the deployment of bench/throughput.py (Redis, `fanout server`, `fanout dispatcher`, separate
processes), a tenant whose limits are raised through the admin API to hold the run, an untimed
warm-up fanout that starts the pool, then `fan(1,000,000)` of bench/tasks.py timed from submit to
its outputs. Redis' peak is INFO memory's used_memory_peak after the run (the Redis is the
benchmark's own, fresh); the parent's is VmHWM read inside the process that ran `fan` (a reusable
worker, which runs other actions of the run too). CPU seconds per process kind as at 10,000.
Without reusable workers the run is skipped: one process per action would take hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from bench import tasks, throughput
from bench.deploy import deployment
from fanout.client import Client
from fanout.runtime import load_task

ACTIONS = 1_000_000
LIMITS = {
    "max_fanout": 2 * ACTIONS,
    "max_concurrency": ACTIONS,  # the ceiling an admin may set
    "max_queued": 2 * ACTIONS,
    "max_stored_bytes": 4 << 30,
}


@dataclass(frozen=True)
class Million:
    actions: int
    completed: bool
    note: str  # why it did not run or did not complete
    wall_s: float | None = None
    actions_per_s: float | None = None
    redis_used_memory_before: int | None = None
    redis_used_memory_peak: int | None = None
    parent_peak_rss_kb: int | None = None
    runner: str = ""
    cpu_s: dict[str, float] = field(default_factory=dict)


def run() -> Million:
    if tasks.REUSE is None:
        return Million(ACTIONS, False, f"skipped: {throughput.NOT_REUSABLE}; a process per action would take hours")
    fan = load_task(f"file:{throughput.TASK_FILE}:fan")
    with deployment(throughput.CAPACITY) as d, redis.Redis.from_url(d.redis_url) as r:
        with Client(d.tenant("million", **LIMITS)) as client:
            throughput.time_run(client, fan, throughput.WARMUP)
            before = int(r.info("memory")["used_memory"])
            figure, cpu = throughput.with_cpu(d, client, fan, ACTIONS)
            peak = int(r.info("memory")["used_memory_peak"])
            if figure.error:
                return Million(ACTIONS, False, figure.error, figure.wall_s, None, before, peak, None, "", cpu)
    f = figure
    return Million(ACTIONS, True, "", f.wall_s, f.actions_per_s, before, peak, f.parent_peak_rss_kb, f.runner, cpu)


def table(m: Million) -> list[tuple[str, str]]:
    if not m.completed:
        wall = f" after {m.wall_s:.0f} s" if m.wall_s is not None else ""
        return [(f"run of {m.actions:,} actions", f"did not complete{wall}: {m.note}")]
    assert m.wall_s is not None and m.redis_used_memory_peak is not None and m.parent_peak_rss_kb is not None
    rows = [
        (f"run of {m.actions:,} actions", f"completed in {m.wall_s:.1f} s  ({m.actions_per_s:,.0f} actions/s)"),
        (
            "Redis peak memory",
            f"{m.redis_used_memory_peak / 2**20:,.0f} MiB used_memory_peak  "
            f"({(m.redis_used_memory_before or 0) / 2**20:,.0f} MiB before the run)",
        ),
        ("parent peak RSS", f"{m.parent_peak_rss_kb / 1024:,.0f} MiB VmHWM of `python {m.runner}`"),
    ]
    by_cpu = sorted(m.cpu_s.items(), key=lambda kv: -kv[1])
    rows.extend((f"CPU: {kind}", f"{seconds:.1f} s") for kind, seconds in by_cpu)
    return rows
