"""Nested fanout: PARENTS parents at once, each gathering CHILDREN no-ops, on reusable workers.

This is where a worker's parents share its machinery: their children go out
together (SubmitMany) and come back on one watch stream per worker (WatchMany)
instead of one SubmitBatch and one WatchChildren per parent. The timer covers
`start_run` of `nested_fan` up to the root's outputs (1 + PARENTS + PARENTS ×
CHILDREN actions), REPEATS times after a warm-up; the median counts. CPU
seconds per process kind (bench/procs.py) are those of the median run.

    python -m bench.nested [LABEL]    # prints the figures, writes bench/results/nested[-LABEL]-<UTC timestamp>.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import tasks
from bench.deploy import deployment
from bench.procs import cpu_by_kind, cpu_snapshot, self_cpu_s
from fanout.client import Client
from fanout.runs import start_run
from fanout.runtime import load_task

PARENTS = 100
CHILDREN = 100
REPEATS = 3
CAPACITY = 4_096
TIMEOUT_S = 300.0
TASK_FILE = Path(tasks.__file__).resolve()
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Nested:
    parents: int
    children: int
    actions: int  # root, parents and children
    wall_s: float  # median
    actions_per_s: float
    walls_s: list[float]
    cpu_s: dict[str, float]  # of the median run, by process kind
    commit: str


def _timed(client: Client, roots: list[int]) -> tuple[float, dict[str, float]]:
    nested_fan = load_task(f"file:{TASK_FILE}:nested_fan")
    before, client_before = cpu_snapshot(roots), self_cpu_s()
    start = time.perf_counter()
    result = start_run(client, nested_fan, PARENTS, CHILDREN).wait(TIMEOUT_S).outputs()
    wall = time.perf_counter() - start
    cpu = cpu_by_kind(before, cpu_snapshot(roots))
    cpu["client (the benchmark)"] = round(self_cpu_s() - client_before, 2)
    if result["count"] != PARENTS * CHILDREN or result["sum"] != PARENTS * (CHILDREN * (CHILDREN - 1) // 2):
        raise RuntimeError(f"a wrong result: {str(result)[:200]}")
    return wall, cpu


def run() -> Nested:
    actions = 1 + PARENTS + PARENTS * CHILDREN
    with deployment(CAPACITY) as d:
        cfg = d.tenant("nested", max_fanout=10 * actions, max_concurrency=10 * actions)
        with Client(cfg) as client:
            roots = list(d.pids.values())
            start_run(client, load_task(f"file:{TASK_FILE}:fan"), 100).wait(TIMEOUT_S)  # warm-up: start the pool
            tries = sorted((_timed(client, roots) for _ in range(REPEATS)), key=lambda t: t[0])
    wall, cpu = tries[len(tries) // 2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return Nested(PARENTS, CHILDREN, actions, wall, actions / wall, [t[0] for t in tries], cpu, commit)


def table(n: Nested) -> list[tuple[str, str]]:
    tries = " / ".join(f"{w:.2f}" for w in n.walls_s)
    rows = [
        (
            f"nested fanout {n.parents} × {n.children} ({n.actions:,} actions)",
            f"{n.actions_per_s:,.0f} actions/s  ({n.wall_s:.2f} s median; tries {tries} s)",
        )
    ]
    for kind, seconds in sorted(n.cpu_s.items(), key=lambda kv: -kv[1]):
        rows.append((f"nested CPU: {kind}", f"{seconds:.2f} s  ({seconds / n.actions * 1e6:,.0f} µs/action)"))
    return rows


def main() -> None:
    result = run()
    for name, value in table(result):
        print(f"{name:<45} {value}")
    RESULTS.mkdir(exist_ok=True)
    label = "".join(f"-{a}" for a in sys.argv[1:2])
    path = RESULTS / f"nested{label}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
