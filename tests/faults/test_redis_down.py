"""Redis unreachable means fail closed: UNAVAILABLE, never an unaccounted admission."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from fanout import errors
from fanout.client import TERMINAL_PHASES, Client
from fanout.config import ClientConfig
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.process_backend import ProcessBackend
from fanout.quota import keys
from fanout.quota.actions import ActionStore
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.scripts import Scripts
from fanout.server.app import ControlPlane, create_server
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from tests.helpers import LoopThread, eventually


def test_requests_fail_unavailable_while_redis_is_down_and_nothing_is_admitted(
    loop_thread: LoopThread, killable_plane: ControlPlane, killable_redis: RedisProcess
) -> None:
    loop_thread.run(killable_plane.actions.register_tenant("down"))
    token = loop_thread.run(killable_plane.tokens.create("tenant", "down"))
    children = [pb.ActionSpec(name=f"c{i}", task_ref="m:x:y") for i in range(5)]
    with Client(ClientConfig(endpoint=f"127.0.0.1:{killable_plane.port}", token=token)) as client:
        run = client.create_run(pb.ActionSpec(task_ref="m:x:y"))

        killable_redis.kill()
        with pytest.raises(errors.Unavailable, match="state store unreachable"):
            client.submit_batch(run.name, "root", children)
        with pytest.raises(errors.Unavailable):
            client.get_run(run.name)

        killable_redis.start()  # same port and append-only file
        eventually(lambda: client.get_run(run.name).action_count == 1, timeout=15, retry_on=(errors.Unavailable,))
        assert client.submit_batch(run.name, "root", children).admitted == 5


@pytest.fixture
def short_lease_plane(
    loop_thread: LoopThread, settings: Settings, killable_redis: RedisProcess
) -> Iterator[ControlPlane]:
    quick = replace(settings, redis_url=killable_redis.url, lease_seconds=3.0, reap_interval_seconds=0.3)
    plane = loop_thread.run(create_server(quick))
    yield plane
    loop_thread.run(plane.stop(grace=1))


@pytest.fixture
def own_dispatcher(loop_thread: LoopThread, short_lease_plane: ControlPlane, tmp_path: Path) -> Iterator[Dispatcher]:
    token = loop_thread.run(short_lease_plane.tokens.create("dispatcher"))
    endpoint = f"127.0.0.1:{short_lease_plane.port}"
    dispatcher = Dispatcher(ClientConfig(endpoint=endpoint, token=token), ProcessBackend(tmp_path / "actions"))
    running = asyncio.run_coroutine_threadsafe(dispatcher.run(), loop_thread.loop)
    yield dispatcher
    loop_thread.loop.call_soon_threadsafe(dispatcher.stop)
    running.result(30)


def test_redis_outages_do_not_cost_a_running_action_its_leases(
    loop_thread: LoopThread,
    short_lease_plane: ControlPlane,
    killable_redis: RedisProcess,
    own_dispatcher: Dispatcher,
) -> None:
    plane = short_lease_plane
    loop_thread.run(plane.actions.register_tenant("outage"))
    token = loop_thread.run(plane.tokens.create("tenant", "outage"))
    store = redis.Redis.from_url(killable_redis.url)
    with Client(ClientConfig(endpoint=f"127.0.0.1:{plane.port}", token=token)) as client:
        run = client.create_run(pb.ActionSpec(task_ref="sleeper", command=["sleep", "14"]))
        eventually(lambda: client.get_action(run.name, "root").phase == pb.RUNNING, timeout=30)

        # Each outage is shorter than a lease (3 s); heartbeats cannot renew while it lasts.
        for _ in range(3):
            killable_redis.kill()
            time.sleep(2.0)
            killable_redis.start()  # same port and append-only file
            eventually(lambda: client.get_action(run.name, "root").phase == pb.RUNNING, timeout=10,
                       retry_on=(AssertionError, errors.Unavailable))  # fmt: skip
            time.sleep(1.0)

        finished = lambda: client.get_run(run.name).phase in TERMINAL_PHASES  # noqa: E731
        eventually(finished, timeout=30, retry_on=(AssertionError, errors.Unavailable))
        root = client.get_action(run.name, "root")
    lost = store.hget(keys.TenantKeys("outage").prefix + "lost:" + run.name, "root")
    store.close()
    assert (root.phase, root.attempt, int(lost or 0)) == (pb.SUCCEEDED, 1, 0)


def test_the_reaper_gives_every_lease_a_full_period_after_redis_comes_back(killable_redis: RedisProcess) -> None:
    class Clock:
        now = 1_000_000.0

        def __call__(self) -> float:
            return self.now

    async def main() -> list[tuple[int, int]]:
        client = aioredis.Redis.from_url(killable_redis.url)
        clock = Clock()
        scripts = Scripts.register(client)
        limits = LimitStore(client, scripts, Limits(), clock)
        store = ActionStore(client, scripts, limits, lease_seconds=10, clock=clock)
        try:
            await store.register_tenant("grace")
            await store.create_run("grace", "r1", "root", b"spec")
            await store.lease("grace", 1)  # expires at +10
            store.lost_contact()  # a reaper round failed: Redis was unreachable
            reaps = []
            for now in (12.0, 21.0, 23.0):  # back at +12: nothing is reaped until +22
                clock.now = 1_000_000.0 + now
                reaps.append(await store.reap("grace"))
            return reaps
        finally:
            await client.aclose()

    # Its dispatcher never renewed: once the grace has passed, the lease is reclaimed as usual.
    assert asyncio.run(main()) == [(0, 0), (0, 0), (1, 0)]
