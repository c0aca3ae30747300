"""Throughput: fanouts of no-op tasks through the SDK, submit to all results, and Ray's on the same workload.

How: a deployment of separate processes (bench/deploy.py: Redis, `fanout server`,
`fanout dispatcher` with the process backend). The SDK client is this process.
A run's root is `fan(n)` of bench/tasks.py, which gathers `noop(i)` for i < n;
the timer covers `start_run` up to the root's outputs (run creation, the root,
the n children and their results). Each timed run starts once Redis has no
background save or rewrite left from the run before (Deployment.settle), so
none pays for its predecessor. Runs, in order, after an untimed warm-up:

- fanouts of SIZES on reusable workers (the `reused` environment, a ReusePolicy),
  10,000 of them REPEATS times (the median is the headline figure): time per action
  for each N, which must not grow with N;
- CPU seconds per process kind during each 10,000 run, from /proc (bench/procs.py);
  the median run's are printed;
- fanouts of PER_ACTION on the one-worker-per-action path (no ReusePolicy), REPEATS
  times (the median is the figure);
- after the deployment has stopped, the same 10,000 on Ray (bench/ray_peer.py, its
  own process), when Ray is installed (`pip install -e '.[bench]'`).

Without ReusePolicy in the SDK, the `reused` environment has no pool: the figures
say so ("reusable workers not available: measured one process per action") and
the sizes that would take minutes that way are skipped, never estimated.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench import tasks
from bench.deploy import Deployment, deployment
from bench.procs import cpu_by_kind, cpu_snapshot, self_cpu_s
from fanout.client import Client
from fanout.errors import FanoutError
from fanout.runs import start_run
from fanout.runtime import load_task

SIZES = (1_000, 10_000, 100_000)
HEADLINE = 10_000
REPEATS = 3
PER_ACTION = 500
WARMUP = 100
# Without reusable workers an action costs a process: sizes over this would take minutes.
MAX_PER_PROCESS = 10_000
CAPACITY = 4_096  # actions the dispatcher holds at once
PER_PROCESS_CONCURRENCY = 256  # processes at once on the per-action path (the default capacity of `fanout up`)
# A run is given up (and said so) after SLACK_S + N / its path's slowest expected rate, so a stuck
# run costs minutes, not the whole benchmark.
SLACK_S = 60.0
MIN_RATE_REUSED = 500.0
MIN_RATE_PER_PROCESS = 50.0
RAY_TIMEOUT = 900.0
TASK_FILE = Path(tasks.__file__).resolve()
NOT_REUSABLE = "reusable workers not available: measured one process per action"
T = TypeVar("T")


@dataclass(frozen=True)
class RunFigure:
    actions: int
    wall_s: float
    actions_per_s: float
    per_action_us: float
    parent_peak_rss_kb: int  # VmHWM of the process that ran fan(n)
    runner: str  # that process's command line: a reusable worker's, or a per-action runtime's
    error: str = ""  # how the run failed or why it was given up (then wall_s is the time until then)


@dataclass(frozen=True)
class Peer:
    name: str
    version: str
    tasks: int
    wall_s: float | None  # the median of the tries
    tasks_per_s: float | None
    walls_s: list[float]
    note: str  # why there is no figure, when there is none


@dataclass(frozen=True)
class Throughput:
    mode: str
    deployment: str
    headline: RunFigure  # the median of REPEATS fanouts of HEADLINE
    headline_walls_s: list[float]
    cpu_s: dict[str, float]  # CPU seconds per process kind during the median headline run
    scaling: list[RunFigure]
    skipped: list[str]
    per_action: RunFigure  # the median of REPEATS fanouts of PER_ACTION
    per_action_walls_s: list[float]
    ray: Peer
    ratio_to_ray: float | None


def mode() -> str:
    if tasks.REUSE is None:
        return NOT_REUSABLE
    return f"reusable workers: ReusePolicy(replicas={tasks.REPLICAS}, concurrency={tasks.CONCURRENCY})"


def run() -> Throughput:
    reusable = tasks.REUSE is not None
    fan = load_task(f"file:{TASK_FILE}:fan")
    fan_per_action = load_task(f"file:{TASK_FILE}:fan_per_action")
    with deployment(CAPACITY) as d:
        limit = 10 * max(SIZES) if reusable else PER_PROCESS_CONCURRENCY
        reused_cfg = d.tenant("reused", max_fanout=10 * max(SIZES), max_concurrency=limit)
        per_action_cfg = d.tenant("per-action", max_fanout=10 * max(SIZES), max_concurrency=PER_PROCESS_CONCURRENCY)
        with Client(reused_cfg) as reused, Client(per_action_cfg) as per_action:
            for warmup in (time_run(reused, fan, WARMUP), time_run(per_action, fan_per_action, WARMUP // 10)):
                if warmup.error:
                    raise RuntimeError(f"the warm-up fanout failed: {warmup.error}")
            scaling, skipped = [], []
            headline: tuple[RunFigure, dict[str, float]] | None = None
            walls: list[float] = []
            for n in SIZES:
                if not reusable and n > MAX_PER_PROCESS:
                    skipped.append(f"fanout of {n:,}: {NOT_REUSABLE}, it would take minutes")
                    continue
                if n != HEADLINE:
                    d.settle()
                    scaling.append(time_run(reused, fan, n))
                    continue
                tries = [_settled(d, with_cpu, d, reused, fan, n) for _ in range(REPEATS if reusable else 1)]
                headline = _median(tries, lambda t: t[0])
                walls = [t[0].wall_s for t in tries]
                scaling.append(headline[0])
            assert headline is not None
            per_action_tries = [_settled(d, time_run, per_action, fan_per_action, PER_ACTION) for _ in range(REPEATS)]
            per_action_figure = _median(per_action_tries, lambda f: f)
    ray = ray_peer(HEADLINE, REPEATS)
    ratio = headline[0].actions_per_s / ray.tasks_per_s if ray.tasks_per_s and not headline[0].error else None
    return Throughput(
        mode(),
        f"separate processes: Redis, `fanout server`, `fanout dispatcher --capacity {CAPACITY}` (process backend)",
        headline[0],
        walls,
        headline[1],
        scaling,
        skipped,
        per_action_figure,
        sorted(f.wall_s for f in per_action_tries),
        ray,
        ratio,
    )


def _settled(d: Deployment, measure: Callable[..., T], *args: Any) -> T:
    d.settle()
    return measure(*args)


def _median(tries: list[T], figure: Callable[[T], RunFigure]) -> T:
    """The median by wall time of the tries that finished (of all of them if none did)."""
    done = sorted((t for t in tries if not figure(t).error), key=lambda t: figure(t).wall_s) or tries
    return done[len(done) // 2]


def with_cpu(d: Deployment, client: Client, task: Any, n: int) -> tuple[RunFigure, dict[str, float]]:
    roots = list(d.pids.values())
    before, client_before = cpu_snapshot(roots), self_cpu_s()
    figure = time_run(client, task, n)
    after, client_after = cpu_snapshot(roots), self_cpu_s()
    cpu = cpu_by_kind(before, after)
    cpu["client (the benchmark)"] = round(client_after - client_before, 2)
    return figure, cpu


def time_run(client: Client, task: Any, n: int) -> RunFigure:
    """Time `task(n)` from submit to outputs; a failed, wrong or stuck run is a figure that says so."""
    reusable = tasks.REUSE is not None and task.env is tasks.reused
    timeout = SLACK_S + n / (MIN_RATE_REUSED if reusable else MIN_RATE_PER_PROCESS)
    print(f"  {task.name}({n:,}) ...", end=" ", flush=True)
    figure = _timed(client, task, n, timeout)
    print(f"failed: {figure.error}" if figure.error else f"{figure.wall_s:.2f} s", flush=True)
    return figure


def _timed(client: Client, task: Any, n: int, timeout: float) -> RunFigure:
    start = time.perf_counter()
    try:
        result = start_run(client, task, n).wait(timeout).outputs()
    except FanoutError as exc:
        return RunFigure(n, time.perf_counter() - start, 0.0, 0.0, 0, "", f"{type(exc).__name__}: {exc}"[:300])
    wall = time.perf_counter() - start
    if result.get("count") != n or result.get("sum") != n * (n - 1) // 2:
        return RunFigure(n, wall, 0.0, 0.0, 0, "", f"a wrong result: {str(result)[:200]}")
    return RunFigure(n, wall, n / wall, wall / n * 1e6, int(result["peak_rss_kb"]), str(result["runner"]))


def ray_peer(n: int, repeats: int) -> Peer:
    """Ray on the same workload, in its own process (bench/ray_peer.py); skipped when Ray is absent."""
    if importlib.util.find_spec("ray") is None:
        note = "Ray is not installed: `pip install -e '.[bench]'` installs it; skipped"
        return Peer("ray", "", n, None, None, [], note)
    cmd = [sys.executable, "-m", "bench.ray_peer", str(n), str(repeats)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=RAY_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return Peer("ray", "", n, None, None, [], f"Ray did not finish within {RAY_TIMEOUT:.0f} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return Peer("ray", "", n, None, None, [], f"Ray failed (exit {done.returncode}): {done.stderr[-500:]}")
    figure: dict[str, Any] = json.loads(lines[-1])
    walls = sorted(float(w) for w in figure["walls_s"])
    wall = walls[len(walls) // 2]
    return Peer("ray", figure["version"], n, wall, n / wall, walls, "")


def table(t: Throughput) -> list[tuple[str, str]]:
    h = t.headline
    tries = " / ".join(f"{w:.2f}" for w in t.headline_walls_s)
    rows = [
        ("throughput mode", f"{t.mode}; the parent ran in `python {h.runner or '?'}`"),
        ("throughput deployment", t.deployment),
        (
            f"fanout of {h.actions:,} (SDK, submit to results)",
            f"failed after {h.wall_s:.1f} s: {h.error}"
            if h.error
            else f"{h.actions_per_s:,.0f} actions/s  ({h.wall_s:.2f} s median; tries {tries} s)",
        ),
    ]
    if t.ray.tasks_per_s is not None and t.ray.wall_s is not None:
        rows.append(
            (
                f"Ray {t.ray.version}, {t.ray.tasks:,} no-op tasks",
                f"{t.ray.tasks_per_s:,.0f} tasks/s  ({t.ray.wall_s:.2f} s median; tries "
                + " / ".join(f"{w:.2f}" for w in t.ray.walls_s)
                + " s)",
            )
        )
        rows.append(("fanout ÷ Ray", f"{t.ratio_to_ray:.2f}×" if t.ratio_to_ray else "no figure: the fanout failed"))
    else:
        rows.append(("Ray", t.ray.note))
    for f in t.scaling:
        if f.error:
            rows.append((f"fanout of {f.actions:,}", f"failed after {f.wall_s:.1f} s: {f.error}"))
            continue
        rows.append(
            (
                f"fanout of {f.actions:,}",
                f"{f.per_action_us:,.0f} µs/action  ({f.actions_per_s:,.0f} actions/s, {f.wall_s:.2f} s; "
                f"parent peak RSS {f.parent_peak_rss_kb / 1024:.0f} MiB)",
            )
        )
    rows.extend(("skipped", s) for s in t.skipped)
    p = t.per_action
    outcome = (
        f"failed after {p.wall_s:.1f} s: {p.error}"
        if p.error
        else f"{p.actions_per_s:,.0f} actions/s  ({p.wall_s:.2f} s median; tries "
        + " / ".join(f"{w:.2f}" for w in t.per_action_walls_s)
        + f" s; the parent ran in `python {p.runner}`)"
    )
    rows.append((f"one worker per action, fanout of {p.actions:,}", outcome))
    total = sum(t.cpu_s.values()) or 1.0
    offered = h.wall_s * (os.cpu_count() or 1)
    rows.append(
        (
            f"CPU at {h.actions:,}: all of them",
            f"{total:.2f} s of the {offered:.2f} CPU-s its wall time offers ({total / offered:.0%})",
        )
    )
    for kind, seconds in sorted(t.cpu_s.items(), key=lambda kv: -kv[1]):
        rows.append(
            (
                f"CPU at {h.actions:,}: {kind}",
                f"{seconds:.2f} s  ({seconds / h.actions * 1e6:,.0f} µs/action, {seconds / total:.0%})",
            )
        )
    return rows
