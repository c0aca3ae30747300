"""Runs that stay quiet for longer than one blocking read: watches stay open, waits never give up.

A watch of a parent whose children change nothing for a while must look
exactly like a healthy one, at every layer: the server stream, the SDK's
`Run.wait` and controller, and `fanout watch`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fanout
from fanout import errors, runs
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.runtime import load_task
from fanout.server.actions_service import WATCH_BLOCK_MS
from fanout.server.app import REDIS_SOCKET_TIMEOUT_SECONDS, ControlPlane, connect_redis
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from tests.conftest import TASKS_FILE, Tenant
from tests.helpers import LoopThread

FANOUT = str(Path(sys.executable).parent / "fanout")
QUIET_SECONDS = 8.0  # longer than one blocking read and than redis-py's default 5 s socket timeout


def start(tenant: Tenant, task: str, *args: object) -> fanout.Run:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    return fanout.run(load_task(f"file:{TASKS_FILE}:{task}"), *args)


def test_the_redis_socket_timeout_outlasts_the_blocking_watch_read(settings: Settings) -> None:
    redis = connect_redis(settings.redis_url)
    try:
        conn = redis.connection_pool.make_connection()
        assert conn.socket_timeout is not None and conn.socket_connect_timeout is not None
        # A blocking XREAD answers after WATCH_BLOCK_MS; the socket must wait longer, with room to spare.
        assert conn.socket_timeout >= WATCH_BLOCK_MS / 1000 + 2
        # Fail closed within seconds, and never resend a command (a script) that may have run.
        assert conn.socket_timeout <= 10 and conn.socket_connect_timeout <= 5
        assert conn.retry.get_retries() == 0
    finally:
        asyncio.run(redis.aclose())


def test_a_raw_watch_of_a_quiet_parent_stays_open_and_sends_heartbeats(tenant: Tenant) -> None:
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["true"]))
    events: list[pb.WatchEvent] = []
    began = time.monotonic()
    with pytest.raises(errors.DeadlineExceeded):  # our own deadline ends it, not the server
        for event in tenant.client.watch_children(run.name, "root", timeout=QUIET_SECONDS + 1):
            events.append(event)
    assert time.monotonic() - began >= QUIET_SECONDS
    assert events[0].HasField("replay_done")
    heartbeats = events[1:]
    assert len(heartbeats) >= 2, events
    assert all(e.WhichOneof("event") is None and e.cursor == events[0].cursor for e in heartbeats)


@pytest.mark.usefixtures("dispatcher")
def test_fanout_watch_follows_a_quiet_root_to_the_end(tenant: Tenant, tmp_path: Path) -> None:
    run = start(tenant, "sleepy", 1, QUIET_SECONDS)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "FANOUT_ENDPOINT": tenant.client.config.endpoint,
        "FANOUT_TOKEN": tenant.token,
    }
    result = subprocess.run(
        [FANOUT, "watch", run.name], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout.strip() == "1/1 finished · SUCCEEDED=1"


@pytest.mark.usefixtures("dispatcher")
def test_a_parent_awaiting_a_quiet_child_logs_no_warning(tenant: Tenant) -> None:
    run = start(tenant, "quiet_parent", QUIET_SECONDS)
    assert run.outputs() == []


@pytest.mark.usefixtures("dispatcher")
def test_run_wait_never_counts_a_quiet_stream_as_unreachable(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    # No tolerance at all for an unreachable control plane: a healthy, quiet watch must never need it.
    monkeypatch.setattr(runs, "RECONNECT_SECONDS", 0.0)
    run = start(tenant, "sleepy", 7, QUIET_SECONDS)
    assert run.wait().phase == "SUCCEEDED"
    assert run.outputs() == 7


def test_run_wait_restarts_its_reconnect_budget_after_each_outage(
    loop_thread: LoopThread, killable_plane: ControlPlane, killable_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two short outages, each within the budget, together longer than it: the wait rides out both."""
    monkeypatch.setattr(runs, "RECONNECT_SECONDS", 5.0)
    outage = 1.5
    loop_thread.run(killable_plane.actions.register_tenant("outages"))
    token = loop_thread.run(killable_plane.tokens.create("tenant", "outages"))
    with Client(ClientConfig(endpoint=f"127.0.0.1:{killable_plane.port}", token=token)) as client:
        # No dispatcher serves this plane: the root stays queued and the watch stays quiet.
        run = runs.Run(client, client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["true"])))

        def two_outages() -> None:
            for _ in range(2):
                time.sleep(1.0)
                killable_redis.kill()
                time.sleep(outage)
                killable_redis.start()  # same port and append-only file
                time.sleep(4.0)

        outages = threading.Thread(target=two_outages)
        outages.start()
        try:
            with pytest.raises(errors.DeadlineExceeded):
                run.wait(timeout=2 * (1.0 + outage + 4.0))
        finally:
            outages.join()


def test_a_stalled_redis_still_fails_a_call_within_the_socket_timeout(
    loop_thread: LoopThread, killable_plane: ControlPlane, killable_redis: RedisProcess
) -> None:
    """Fail closed holds with the longer socket timeout: a Redis that stops answering is UNAVAILABLE, not a hang."""
    loop_thread.run(killable_plane.actions.register_tenant("stalled"))
    token = loop_thread.run(killable_plane.tokens.create("tenant", "stalled"))
    assert killable_redis._proc is not None
    pid = killable_redis._proc.pid
    with Client(ClientConfig(endpoint=f"127.0.0.1:{killable_plane.port}", token=token)) as client:
        client.get_quota()
        os.kill(pid, signal.SIGSTOP)  # the socket stays open, nothing answers
        try:
            began = time.monotonic()
            with pytest.raises(errors.Unavailable, match="state store unreachable"):
                client.get_quota()  # the call's own deadline is 60 s
            took = time.monotonic() - began
        finally:
            os.kill(pid, signal.SIGCONT)
    assert took < 2 * REDIS_SOCKET_TIMEOUT_SECONDS, took
