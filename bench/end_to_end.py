"""End to end: the wall time of a fanout of 200 no-op tasks through the SDK.

How: `fanout up` (private Redis, gRPC server, one dispatcher with the local
process backend, default limits) runs as a subprocess. A task file written to
a temporary directory holds `fan(n)`, which gathers `noop(i)` for i < n; every
call is an action in its own process. The timer covers `fanout.run(fan, 200)`
up to its outputs: run creation, the root action, the 200 children and their
results. The dispatch latency (admission or requeue to lease) p50/p99 is
estimated from the server's Prometheus histogram fanout_dispatch_latency_seconds,
scraped after the run, by linear interpolation within the bucket.
"""

from __future__ import annotations

import math
import os
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import fanout
from bench.procs import clean_env, fanout_cmd, running
from fanout.runs import client as sdk_client
from fanout.runtime import load_task

TASKS = 200
RUN_TIMEOUT = 240.0
LATENCY_METRIC = "fanout_dispatch_latency_seconds"
TASK_FILE = textwrap.dedent(
    """
    import asyncio

    import fanout

    env = fanout.TaskEnvironment(name="bench")


    @env.task
    async def noop(i: int) -> int:
        return i


    @env.task
    async def fan(n: int) -> list[int]:
        return list(await asyncio.gather(*(noop(i) for i in range(n))))
    """
)


@dataclass(frozen=True)
class EndToEnd:
    tasks: int
    wall_s: float
    dispatch_samples: int
    dispatch_p50_s: float | None
    dispatch_p99_s: float | None


def run() -> EndToEnd:
    with tempfile.TemporaryDirectory(prefix="fanout-bench-e2e-") as tmp:
        root = Path(tmp)
        # Passable by others (not listable): run as root, `fanout up` runs each tenant's actions under
        # the tenant's own uid, which must reach its folder under the data directory.
        root.chmod(0o711)
        task_file = root / "bench_tasks.py"  # never fanout.py: it would shadow the package
        task_file.write_text(TASK_FILE)
        data_dir = root / "data"
        cmd = fanout_cmd("up", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--metrics-port", "0")
        with running(cmd, root / "up", r"fanout is ready at \S+ · metrics (http://\S+)", clean_env()) as ready:
            wall = _time_fanout(data_dir / "config.yaml", task_file)
            buckets, count = _histogram(ready.group(1), LATENCY_METRIC)
    return EndToEnd(TASKS, wall, count, _quantile(buckets, count, 0.50), _quantile(buckets, count, 0.99))


def _time_fanout(config: Path, task_file: Path) -> float:
    for name in ("FANOUT_ENDPOINT", "FANOUT_TOKEN"):
        os.environ.pop(name, None)  # they would override the config file of this `fanout up`
    fanout.init_from_config(str(config))
    fan = load_task(f"file:{task_file}:fan")
    try:
        start = time.perf_counter()
        result = fanout.run(fan, TASKS).wait(RUN_TIMEOUT).outputs()
        wall = time.perf_counter() - start
    finally:
        sdk_client().close()
    if result != list(range(TASKS)):
        raise RuntimeError(f"fan({TASKS}) returned a wrong result: {str(result)[:200]}")
    return wall


def _histogram(url: str, name: str) -> tuple[list[tuple[float, float]], int]:
    """The histogram's cumulative (upper bound, count) buckets and its sample count."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    buckets: list[tuple[float, float]] = []
    count = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == f"{name}_count":
                count = int(sample.value)
    return sorted(buckets), count


def _quantile(buckets: list[tuple[float, float]], count: int, q: float) -> float | None:
    """Estimate quantile `q` as Prometheus' histogram_quantile does: linear within the bucket."""
    if count == 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bound: the best we can say
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return None
