"""The issue's figure: AbortRun of a 300,001-action run, every script short, every action counted once.

`make soak` runs it. Its own Redis and server, with no dispatcher to race the counts.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import Any

import pytest
import redis

from fanout.server.app import ControlPlane
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from tests.conftest import make_tenant
from tests.helpers import LoopThread

CHILDREN = 300_000
BATCH = 10_000
SCRIPT_BOUND_US = 50_000

pytestmark = pytest.mark.soak


@pytest.fixture(scope="module")
def own_settings(settings: Settings, own_redis: RedisProcess) -> Settings:
    return replace(settings, redis_url=own_redis.url, max_fanout=CHILDREN + 1)


def test_aborting_300001_actions_runs_in_short_scripts(
    loop_thread: LoopThread, own_plane: ControlPlane, own_redis: RedisProcess
) -> None:
    tenant = make_tenant(loop_thread, own_plane, f"127.0.0.1:{own_plane.port}", prefix="soak")
    client = redis.Redis.from_url(own_redis.url)
    try:
        run = tenant.client.create_run(pb.ActionSpec(task_ref="module:tests:root")).name
        names = (f"c{i}" for i in range(CHILDREN))
        while batch := list(itertools.islice(names, BATCH)):
            specs = [pb.ActionSpec(name=n, task_ref="module:tests:noop", inputs=b"{}") for n in batch]
            tenant.client.submit_batch(run, "root", specs)
        # Log what takes over a millisecond during the abort, to report the longest script. Not
        # everything: commands a script calls are logged too, and would crowd the scripts out.
        client.config_set("slowlog-log-slower-than", 1_000)
        client.config_set("slowlog-max-len", 100_000)
        client.slowlog_reset()

        started = time.monotonic()
        aborted = tenant.client.abort_run(run, reason="soak")
        took = time.monotonic() - started

        entries: list[dict[str, Any]] = client.slowlog_get(100_000)
        scripts = [int(e["duration"]) for e in entries if bytes(e["command"]).upper().startswith(b"EVAL")]
        longest = max(scripts, default=0)
        median = sorted(scripts)[len(scripts) // 2] if scripts else 0
        print(f"abort of {CHILDREN + 1:,} actions: {took:.2f} s; {len(scripts)} scripts over 1 ms,")
        print(f"median of those {median} us, longest {longest} us")
        assert aborted == CHILDREN + 1
        assert longest < SCRIPT_BOUND_US
        assert tenant.queued() == 0
        states: list[bytes] = client.hvals(f"fo:{{{tenant.name}}}:st:{run}")  # type: ignore[assignment]
        assert {s.split(b":")[0] for s in states} == {b"7"}
    finally:
        client.config_set("slowlog-log-slower-than", 10_000)
        client.close()
        tenant.client.close()
