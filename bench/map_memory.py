"""The parent's peak RSS for `fanout.map` over N inputs with concurrency 100, beside a plain gather of N.

How: a deployment of separate processes (bench/deploy.py). The parent runs in its own runtime
process and reads its own VmHWM at the end (bench/map_tasks.py); children are no-ops on reusable
workers. Also the same map run locally (no control plane), in a fresh interpreter per size, to
show the generator's own cost. Prints the figures and writes bench/results/map_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import map_tasks
from bench.deploy import deployment
from fanout.client import Client
from fanout.runs import start_run
from fanout.runtime import load_task

SIZES = (1_000, 10_000, 100_000)
CONCURRENCY = 100
CAPACITY = 2_048
TASK_FILE = Path(map_tasks.__file__).resolve()
RESULTS = Path(__file__).parent / "results" / "map_memory.json"
LOCAL_SCRIPT = """
import asyncio, fanout, sys
from bench.tasks import peak_rss_kb
env = fanout.TaskEnvironment(name="local")
async def noop(i):
    return i
task = fanout.Task(env, noop)
n, concurrency = int(sys.argv[1]), int(sys.argv[2])
before = peak_rss_kb()
count = sum(1 for _ in fanout.map(task, range(n), concurrency=concurrency))
print(count, before, peak_rss_kb())
"""


def local(n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", LOCAL_SCRIPT, str(n), str(CONCURRENCY)], capture_output=True, text=True, check=True
    )
    count, before, peak = (int(x) for x in out.stdout.split())
    return {"inputs": n, "count": count, "rss_at_start_kb": before, "peak_rss_kb": peak}


def remote(sizes: tuple[int, ...], timeout: float) -> list[dict[str, Any]]:
    mapped = load_task(f"file:{TASK_FILE}:mapped")
    gathered = load_task(f"file:{TASK_FILE}:gathered")
    figures = []
    with deployment(CAPACITY) as d:
        cfg = d.tenant("map-memory", max_fanout=4 * max(sizes), max_concurrency=CAPACITY)
        with Client(cfg) as client:
            start_run(client, mapped, 100, CONCURRENCY).wait(timeout).outputs()  # warm-up: pools started
            for n in sizes:
                for kind, run_it in (
                    ("map", lambda n=n: start_run(client, mapped, n, CONCURRENCY)),
                    ("gather", lambda n=n: start_run(client, gathered, n)),
                ):
                    print(f"  {kind}({n:,}) ...", end=" ", flush=True)
                    began = time.perf_counter()
                    try:
                        out = run_it().wait(timeout).outputs()
                    except Exception as exc:  # a failed or stuck run is a figure that says so
                        print(f"failed: {exc}", flush=True)
                        figures.append({"kind": kind, "inputs": n, "error": f"{type(exc).__name__}: {exc}"[:300]})
                        continue
                    wall = time.perf_counter() - began
                    print(f"{wall:.1f} s, parent peak RSS {out['peak_rss_kb'] / 1024:.1f} MiB", flush=True)
                    assert out["count"] == n and out["sum"] == n * (n - 1) // 2
                    figures.append({"kind": kind, "inputs": n, "wall_s": round(wall, 2), **out})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    sizes = tuple(args.sizes)
    print(f"fanout.map, concurrency {CONCURRENCY}: local (no control plane)")
    local_figures = [local(n) for n in sizes]
    for f in local_figures:
        print(
            f"  map({f['inputs']:,}) peak RSS {f['peak_rss_kb'] / 1024:.1f} MiB"
            f" (at start {f['rss_at_start_kb'] / 1024:.1f})"
        )
    print("through the control plane (parent in its own process)")
    remote_figures = remote(sizes, args.timeout)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    RESULTS.write_text(
        json.dumps(
            {"concurrency": CONCURRENCY, "local": local_figures, "remote": remote_figures, "loadavg": load}, indent=2
        )
    )
    print(f"load average {' '.join(load)}; written to {RESULTS}")


if __name__ == "__main__":
    main()
