"""Admission to RUNNING: how long an admitted action waits before it runs, p50 and p99.

How: a deployment of separate processes (bench/deploy.py: Redis, `fanout server`,
`fanout dispatcher` with the process backend, CAPACITY actions at once). Each
sample is one run whose root is a short nap on reusable workers (bench/tasks.py
`brief`: a no-op is done in its first step, and its worker never says it runs,
so it has no RUNNING report to time): its latency is from just before
CreateRun (which admits the root) to the moment the server recorded the root's
RUNNING report, read from the id of
that event in the run's event stream (Redis' clock, in ms, on this machine:
the same clock as ours). So it covers admission, the pushed lease, the
dispatcher sending the action to a worker, the worker saying it runs on past
its first step, and the RUNNING report. Two cases:

- idle: samples one after another on an otherwise idle system;
- under a fanout: for a small tenant, while another tenant's fanout of
  LARGE_FANOUT no-ops is in flight; that tenant's max_concurrency is half the
  dispatcher's capacity, so capacity is free for the small one. A sample starts
  every LOADED_INTERVAL, whether the one before has ended or not (each on a thread
  of its own), so a stall is sampled as often as the rest: one after another, a
  slow sample would delay the next and the figures would under-count exactly the
  slow stretches ("coordinated omission"). Only samples started before the large
  run finished count.

    python -m bench.latency     # prints the figures, writes bench/results/latency-<UTC timestamp>.json
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import tasks
from bench.deploy import deployment
from fanout import serialization
from fanout.client import Client
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.v1 import actions_pb2 as pb

CAPACITY = 4_096
IDLE_SAMPLES = 200
LOADED_SAMPLES = 400
LOADED_INTERVAL = 0.02  # seconds between the starts of two samples under the fanout
# Threads taking those samples: enough that a start is never late for want of one (64 × 20 ms:
# every sample of the last 1.28 s would have to be still waiting for its root to run).
SAMPLERS = 64
WARMUP = 20  # first runs start the workers of the pool: not what is measured
LARGE_FANOUT = 100_000
# The large run counts as in flight once this many of its children are admitted.
IN_FLIGHT_CHILDREN = 1_000
SAMPLE_TIMEOUT = 30.0
LARGE_TIMEOUT = 900.0
TASK_FILE = Path(tasks.__file__).resolve()
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Case:
    samples: int
    without_running: int  # samples timed to their terminal report: they had no RUNNING report
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class Latency:
    capacity: int
    idle: Case
    under_fanout: Case
    large_fanout: int
    large_concurrency: int
    large_wall_s: float | None  # the large run's submit to results, for context
    note: str


def run() -> dict[str, Any]:
    noop = load_task(f"file:{TASK_FILE}:brief")
    fan = load_task(f"file:{TASK_FILE}:fan")
    large_concurrency = CAPACITY // 2
    with deployment(CAPACITY) as d:
        small_cfg = d.tenant("small")
        large_cfg = d.tenant("large", max_fanout=2 * LARGE_FANOUT, max_concurrency=large_concurrency)
        with Client(small_cfg) as small, Client(large_cfg) as large:
            for i in range(WARMUP):
                _sample(small, noop, i)
            idle = [_sample(small, noop, i) for i in range(IDLE_SAMPLES)]
            loaded, large_wall, note = _under_fanout(small, large, noop, fan)
    figures = Latency(CAPACITY, _case(idle), _case(loaded), LARGE_FANOUT, large_concurrency, large_wall, note)
    return asdict(figures)


def _sample(client: Client, noop: Any, i: int) -> tuple[float, bool]:
    """(seconds from just before the root's admission to the server's record of its RUNNING report,
    whether there was one).

    A dispatcher sends only the terminal report of an action that ended before its RUNNING
    report left (the reporter drops the superseded one), or ended in its first step: then the
    terminal report's time counts, an upper bound.
    """
    spec = noop.spec("root", serialization.encode_inputs(noop.name, (i,), {}))
    began = time.time()
    run = client.create_run(spec)
    # Unbatched, so that each event carries its own id (the cursor): its time is when it was recorded.
    events = client.watch_children(run.name, "", cursor="0-0", timeout=SAMPLE_TIMEOUT)
    try:
        for event in events:
            if event.HasField("update") and event.update.phase >= pb.RUNNING:
                return int(event.cursor.split("-")[0]) / 1000 - began, event.update.phase == pb.RUNNING
    finally:
        events.close()
    raise RuntimeError(f"the watch of {run.name} ended before its root ran")


def _under_fanout(
    small: Client, large: Client, noop: Any, fan: Any
) -> tuple[list[tuple[float, bool]], float | None, str]:
    began = time.perf_counter()
    big = start_run(large, fan, LARGE_FANOUT)
    finished: list[float] = []

    def wait() -> None:
        big.wait(LARGE_TIMEOUT)
        finished.append(time.perf_counter())

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    while large.get_run(big.name).action_count < IN_FLIGHT_CHILDREN + 1 and not finished:
        time.sleep(0.01)
    started: list[tuple[float, Future[tuple[float, bool]]]] = []  # (when started, its sample)
    with ThreadPoolExecutor(SAMPLERS, thread_name_prefix="sample") as samplers:
        due = time.perf_counter()
        while len(started) < LOADED_SAMPLES and not finished:
            started.append((time.perf_counter(), samplers.submit(_sample, small, noop, len(started))))
            due += LOADED_INTERVAL
            time.sleep(max(0.0, due - time.perf_counter()))
        samples = [(at, sample.result()) for at, sample in started]
    if not finished:  # enough samples: the fanout is not what is measured, stop it
        large.abort_run(big.name, "latency benchmark done")
    waiter.join(LARGE_TIMEOUT)
    done_at = finished[0] if finished else None
    in_flight = [sample for at, sample in samples if done_at is None or at <= done_at]
    wall = done_at - began if done_at is not None else None
    every = f"one started every {LOADED_INTERVAL * 1000:.0f} ms"
    note = f"{len(in_flight)} samples ({every}) while the large fanout was in flight" + (
        "; it finished before all samples were taken" if len(in_flight) < LOADED_SAMPLES else ""
    )
    return in_flight, wall, note


def _case(samples: list[tuple[float, bool]]) -> Case:
    if not samples:
        return Case(0, 0, None, None, None)
    ms = sorted(latency * 1000 for latency, _ in samples)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    without = sum(1 for _, running in samples if not running)
    return Case(len(ms), without, round(statistics.median(ms), 2), round(p99, 2), round(ms[-1], 2))


def main() -> None:
    figures = run()
    for label, key in (("idle, free capacity", "idle"), ("small tenant under a large fanout", "under_fanout")):
        c = figures[key]
        print(
            f"admission to RUNNING, {label}: p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, max {c['max_ms']} ms "
            f"({c['samples']} samples, {c['without_running']} timed to their end: no RUNNING report)"
        )
    print(
        f"  {figures['note']}; large fanout of {figures['large_fanout']:,} at max_concurrency "
        f"{figures['large_concurrency']:,}, dispatcher capacity {figures['capacity']:,}"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"latency-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
