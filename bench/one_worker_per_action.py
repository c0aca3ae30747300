"""One worker per action: fanouts of no-op Python tasks without a ReusePolicy, actions per second.

The same deployment and tasks as bench/throughput.py (`fan_per_action(n)` of
bench/tasks.py, on `fanout dispatcher` with the process backend), but only
this path, so a change to it can be measured back to back in a minute:
a warm-up, then TRIES fanouts of ACTIONS, each once Redis' background work
left by the one before is done (Deployment.settle); the median is the figure. The
machine's load average is printed beside it (the machine may be shared),
and so is the CPU each part of the deployment spent per action (from /proc,
bench/procs.py): on a busy machine the wall clock says little, while the
CPU per action, and the rate the machine's cores would allow at that cost,
hold whatever else runs.

    python -m bench.one_worker_per_action [--label NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.deploy import deployment
from bench.throughput import CAPACITY, PER_PROCESS_CONCURRENCY, TASK_FILE, time_run, with_cpu
from fanout.client import Client
from fanout.runtime import load_task

ACTIONS = 500
TRIES = 3
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.one_worker_per_action", description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="one-worker-per-action")
    args = parser.parse_args(argv)
    fan = load_task(f"file:{TASK_FILE}:fan_per_action")
    with deployment(CAPACITY) as d:
        cfg = d.tenant("per-action", max_fanout=10 * ACTIONS, max_concurrency=PER_PROCESS_CONCURRENCY)
        with Client(cfg) as client:
            warmup = time_run(client, fan, 50)
            if warmup.error:
                raise SystemExit(f"the warm-up fanout failed: {warmup.error}")
            load_before = os.getloadavg()
            tries = []
            for _ in range(TRIES):
                d.settle()  # none pays for Redis' background work left by the one before
                tries.append(with_cpu(d, client, fan, ACTIONS))
            load_after = os.getloadavg()
    figures = [figure for figure, _ in tries]
    rates = [f.actions_per_s for f in figures]
    median = statistics.median(rates)
    cpu_ms = [{kind: round(s / ACTIONS * 1000, 2) for kind, s in cpu.items()} for _, cpu in tries]
    totals = [sum(by_kind.values()) for by_kind in cpu_ms]
    median_cpu = statistics.median(totals)
    cores = os.cpu_count() or 1
    print(
        f"one worker per action, fanout of {ACTIONS}: {median:.0f} actions/s median of "
        + " / ".join(f"{r:.0f}" for r in rates)
    )
    print(f"CPU per action: {median_cpu:.1f} ms median of " + " / ".join(f"{t:.1f}" for t in totals))
    print(
        "  by part (the median run): "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in cpu_ms[totals.index(median_cpu)].items())
    )
    print(f"  so {cores} idle cores would allow about {cores * 1000 / median_cpu:.0f} actions/s")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    now = datetime.now(UTC)
    report = {
        "label": args.label,
        "timestamp": now.isoformat(timespec="seconds"),
        "actions": ACTIONS,
        "actions_per_s_median": round(median, 1),
        "runs": [asdict(f) for f in figures],
        "cpu_ms_per_action": cpu_ms,
        "cpu_ms_per_action_median": round(median_cpu, 2),
        "load_average": {"before": load_before, "after": load_after},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.label}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
