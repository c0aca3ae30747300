"""The docker backend beside the process backend: no-op actions per second and start-to-RUNNING latency.

One deployment (Redis, `fanout server`), then for each backend a `fanout
dispatcher --backend process|docker` of its own, each running two fanouts of
no-op children: one whose actions get a worker each (a process, or a
container), one on a reusable pool (ReusePolicy(replicas=2)). Before each
measured fanout a small one warms the path (images in the page cache, the
pool's workers started), so the figures are of a warm deployment.

- actions/s: children / (wall time from creating the run to its result).
- start-to-RUNNING: per child, from the parent submitting it to its code
  running (read by the child itself; see bench/docker_tasks.py); p50/p99.

Needs a Docker engine and the runtime image (scripts/docker_engine.sh).
Figures are printed and written to bench/results/<label>-<UTC>.json, never asserted.

    python -m bench.docker_backend [--per-action N] [--pooled N] [--label NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

from bench import docker_tasks
from bench.deploy import SERVER_LIMITS
from bench.procs import clean_env, fanout_cmd, started
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.redis_process import RedisProcess

RESULTS = Path(__file__).resolve().parent / "results"
TASKS_FILE = Path(docker_tasks.__file__).resolve()
WARMUP = 4


@dataclass(frozen=True)
class Figure:
    backend: str
    mode: str  # "per action" or "pool"
    actions: int
    seconds: float
    actions_per_s: float
    start_to_running_p50_ms: float
    start_to_running_p99_ms: float


def build_image() -> None:
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as context:
        Path(context, "docker_tasks.py").write_bytes(TASKS_FILE.read_bytes())
        Path(context, "Dockerfile").write_text(
            f"FROM fanout-runtime:dev\nCOPY --chown=0:0 docker_tasks.py {TASKS_FILE}\n"
        )
        client.images.build(path=context, tag=docker_tasks.IMAGE, rm=True, forcerm=True)
    client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fanout_once(client: Client, task: Any, n: int) -> tuple[float, list[float]]:
    """Wall seconds of one fanout of n children, and each child's start-to-running in ms."""
    began = time.monotonic()
    latencies = start_run(client, task, n).wait(timeout=600).outputs()
    seconds = time.monotonic() - began
    if len(latencies) != n:
        raise SystemExit(f"the fanout of {n} returned {len(latencies)} children")
    return seconds, [s * 1000 for s in latencies]


def measure(backend: str, client: Client, per_action: int, pooled: int) -> list[Figure]:
    figures = []
    for mode, fan, n in (("per action", "fan_per_action", per_action), ("pool", "fan_pooled", pooled)):
        task = load_task(f"file:{TASKS_FILE}:{fan}")
        fanout_once(client, task, WARMUP)
        seconds, latencies = fanout_once(client, task, n)
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        figures.append(Figure(backend, mode, n, round(seconds, 3), round(n / seconds, 1), round(p50, 1), round(p99, 1)))
        print(
            f"{backend:8} {mode:10} {n:5} no-op actions in {seconds:6.2f}s: {n / seconds:7.1f} actions/s, "
            f"start-to-RUNNING p50 {figures[-1].start_to_running_p50_ms:.0f} ms, "
            f"p99 {figures[-1].start_to_running_p99_ms:.0f} ms",
            flush=True,
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.docker_backend", description=__doc__.splitlines()[0])
    parser.add_argument("--per-action", type=int, default=20, help="children of the per-action fanout (default 20)")
    parser.add_argument("--pooled", type=int, default=200, help="children of the pooled fanout (default 200)")
    parser.add_argument("--label", default="docker-backend")
    args = parser.parse_args(argv)
    figures = run(args.per_action, args.pooled)
    now = datetime.now(UTC)
    report = {
        "label": args.label,
        "timestamp": now.isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "figures": [asdict(f) for f in figures],
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.label}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


def table(figures: list[Figure]) -> list[tuple[str, str]]:
    return [
        (
            f"{f.backend} backend, {f.mode}, {f.actions} no-ops",
            f"{f.actions_per_s:,.1f} actions/s; start to RUNNING p50 / p99 "
            f"{f.start_to_running_p50_ms:.0f} / {f.start_to_running_p99_ms:.0f} ms",
        )
        for f in figures
    ]


def run(per_action: int = 20, pooled: int = 200) -> list[Figure]:
    """The process and docker backends side by side, a container per action and a pool (needs an engine)."""
    build_image()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="fanout-bench-docker-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        # A process-backend dispatcher running as root starts actions under their tenants' uids, which
        # must pass through its folder's parents: mkdtemp makes this one 0700.
        root.chmod(0o711)
        store = RedisProcess(root / "redis").start()
        stack.callback(store.stop)
        admin_file = root / "admin-token"
        server_env = clean_env(
            FANOUT_REDIS_URL=store.url, FANOUT_SIGNING_KEY_FILE=str(root / "signing-key"), **SERVER_LIMITS
        )
        server_cmd = fanout_cmd(
            "server", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--admin-token-file", str(admin_file)
        )
        server = stack.enter_context(started(server_cmd, root / "server", r"listening on (\S+)", server_env))
        endpoint = server.ready.group(1)
        admin = stack.enter_context(Client(ClientConfig(endpoint=endpoint, token=admin_file.read_text().strip())))
        admin.create_tenant("bench-docker")
        admin.set_limits("bench-docker", "benchmark", max_fanout=100_000, max_concurrency=10_000)
        client = stack.enter_context(
            Client(ClientConfig(endpoint=endpoint, token=admin.create_token("tenant", "bench-docker")))
        )
        for backend in ("process", "docker"):
            cmd = fanout_cmd(
                "dispatcher", "--backend", backend, "--endpoint", endpoint, "--work-dir", str(root / backend / "work")
            )
            env = clean_env(FANOUT_TOKEN=admin.create_token("dispatcher"))
            with started(cmd, root / backend, "", env):
                figures += measure(backend, client, per_action, pooled)
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
