"""How fast the run page's JSON endpoints answer for a run of 100,000 admitted actions.

    python -m bench.run_page [--actions 100000]   # prints, writes bench/results/run-page-<UTC>.json

A private Redis and a real control plane with its HTTP port; the run's actions are admitted
through SubmitBatch and never run (no dispatcher), except a few leased and failed through the
store so that the failure list is not empty. Then the page's polls are timed over real HTTP
with the tenant's token in the header: the summary (counts and the newest failures), a page
of 100 actions, and a page of failures. Also reported: the longest Redis command of the polls
(SLOWLOG), which must stay short whatever the size of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis

from fanout.client import Client
from fanout.config import ClientConfig
from fanout.quota.actions import Report
from fanout.quota.phases import FAILED
from fanout.server import signing_key
from fanout.server.app import ControlPlane, create_server
from fanout.server.metrics_http import MetricsServer
from fanout.server.redis_process import RedisProcess
from fanout.server.run_page import RunPage
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb

RESULTS = Path(__file__).resolve().parent / "results"
POLLS = 50
BATCH = 10_000
FAILURES = 100
TENANT = "bench"
T = TypeVar("T")


class Loop:
    """The control plane's event loop, in a thread of its own (the HTTP threads call into it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(300)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def timed_get(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as reply:
        size = len(reply.read())
    return time.perf_counter() - started, size


def admit(plane: ControlPlane, loop: Loop, token: str, actions: int) -> str:
    with Client(ClientConfig(endpoint=f"127.0.0.1:{plane.port}", token=token)) as client:
        run = client.create_run(pb.ActionSpec(task_name="bench.root", command=["true"])).name
        children = [
            pb.ActionSpec(name=f"c{i}", task_name="bench.child", command=["true"], group=f"g{i % 10}")
            for i in range(actions - 1)
        ]
        for i in range(0, len(children), BATCH):
            client.submit_batch(run, "root", children[i : i + BATCH])

    async def fail_some() -> None:
        leased = await plane.actions.lease(TENANT, FAILURES + 1)
        error = pb.ActionResult(error=pb.ActionError(type="ValueError", message="bench")).SerializeToString()
        await plane.actions.report(
            TENANT, [Report(run, a.name, a.attempt, FAILED, error) for a in leased if a.name != "root"]
        )

    loop.run(fail_some())
    return run


def measure(actions: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="fanout-run-page-bench") as tmp:
        store = RedisProcess(Path(tmp) / "redis", appendonly=False).start()
        key = Path(tmp) / "signing-key"
        signing_key.create_if_missing(key)
        settings = Settings.from_env(
            environ={},
            redis_url=store.url,
            listen="127.0.0.1:0",
            metrics_port=0,
            signing_key_file=str(key),
            max_fanout=actions + 1,
            max_queued=actions + 1,
        )
        loop = Loop()
        plane = loop.run(create_server(settings))

        async def pages() -> RunPage:
            return plane.run_page()

        http = MetricsServer(0, pages=loop.run(pages())).start()
        sync = redis.Redis.from_url(store.url)
        try:
            loop.run(plane.actions.register_tenant(TENANT))
            token = loop.run(plane.tokens.create("tenant", TENANT))
            started = time.perf_counter()
            run = admit(plane, loop, token, actions)
            admitted_s = time.perf_counter() - started
            sync.config_set("slowlog-log-slower-than", 1000)
            sync.slowlog_reset()
            base = f"{http.base_url}/api/runs/{run}"
            figures: dict[str, object] = {"actions": actions, "polls": POLLS, "admit_seconds": round(admitted_s, 2)}
            for label, url in {
                "summary": base,
                "actions_page": f"{base}/actions?limit=100",
                "failures_page": f"{base}/actions?phase=FAILED&limit=100",
            }.items():
                timed_get(url, token)  # warm up: connections, script cache
                samples = [timed_get(url, token) for _ in range(POLLS)]
                times = sorted(s for s, _ in samples)
                figures[f"{label}_ms_median"] = round(statistics.median(times) * 1000, 2)
                figures[f"{label}_ms_p95"] = round(times[int(len(times) * 0.95) - 1] * 1000, 2)
                figures[f"{label}_bytes"] = samples[-1][1]
            slowest = max(sync.slowlog_get(128), key=lambda entry: entry["duration"], default=None)
            figures["longest_redis_command_us_over_1ms"] = slowest["duration"] if slowest else 0
            figures["longest_redis_command"] = slowest["command"].decode(errors="replace")[:60] if slowest else ""
        finally:
            http.stop()
            loop.run(plane.stop(grace=1))
            loop.close()
            sync.close()
            store.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=100_000)
    figures = measure(parser.parse_args().actions)
    for name, value in figures.items():
        print(f"{name:>34}: {value}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"run-page-{stamp}.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
