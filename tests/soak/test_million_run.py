"""One run of 1,000,000 actions: admitted in batches of 100,000 with every Redis script short, and its
root's children replayed whole through WatchChildren.

Before, the admission script slowed as the run grew (10–21 s per batch near the end, BUSY for everyone)
and the replay was one 3 s script that made the watch fail. The server here is the module's own, with
no dispatcher, so the million actions stay queued while they are watched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from fanout.server.app import ControlPlane
from fanout.server.redis_process import RedisProcess
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread

pytestmark = pytest.mark.soak

CHILDREN = 1_000_000
BATCH = 100_000
# Generous against a busy 2-core machine; bench/slowlog.py prints the exact figures.
SCRIPT_BOUND_US = 50_000


@pytest.fixture
def tenant(loop_thread: LoopThread, own_plane: ControlPlane) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, own_plane, f"127.0.0.1:{own_plane.port}", prefix="mil")
    t.set_limits(max_fanout=CHILDREN + 1, max_queued=CHILDREN + 1)
    yield t
    t.client.close()


def test_a_million_actions_are_admitted_in_short_scripts_and_their_parent_is_watched(
    tenant: Tenant, own_redis: RedisProcess
) -> None:
    r = redis.Redis.from_url(own_redis.url)
    try:
        r.config_set("slowlog-max-len", 10_000)
        r.config_set("slowlog-log-slower-than", 1_000)  # only what could matter; inner commands stay out
        r.slowlog_reset()
        run = tenant.client.create_run(pb.ActionSpec(task_ref="module:tests:root")).name
        walls = []
        for b in range(CHILDREN // BATCH):
            batch = [pb.ActionSpec(name=f"c{b}x{i}", task_ref="module:tests:noop", inputs=b"{}") for i in range(BATCH)]
            started = time.monotonic()
            response = tenant.client.submit_batch(run, "root", batch)
            walls.append(time.monotonic() - started)
            assert response.admitted == BATCH
        scripts = [int(e["duration"]) for e in r.slowlog_get(-1) if e["command"].startswith(b"EVALSHA")]
        assert tenant.client.get_run(run).action_count == CHILDREN + 1
        assert max(scripts, default=0) < SCRIPT_BOUND_US, (sorted(scripts)[-5:], walls)

        r.slowlog_reset()
        seen, done = 0, 0
        for event in tenant.client.watch_children(run, "root", timeout=900):
            if event.HasField("update"):
                seen += 1
            if event.HasField("replay_done"):
                done += 1
                break
        scripts = [int(e["duration"]) for e in r.slowlog_get(-1) if e["command"].startswith(b"EVALSHA")]
        assert (seen, done) == (CHILDREN, 1)
        assert max(scripts, default=0) < SCRIPT_BOUND_US, sorted(scripts)[-5:]
    finally:
        r.config_set("slowlog-log-slower-than", 10_000)
        r.close()
