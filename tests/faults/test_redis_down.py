"""Redis unreachable means fail closed: UNAVAILABLE, never an unaccounted admission."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fanout import errors
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.server.app import ControlPlane, create_server
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from tests.helpers import LoopThread, eventually


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    store = RedisProcess(tmp_path / "redis").start()
    yield store
    store.stop()


@pytest.fixture
def own_plane(loop_thread: LoopThread, settings: Settings, own_redis: RedisProcess) -> Iterator[ControlPlane]:
    plane = loop_thread.run(create_server(replace(settings, redis_url=own_redis.url)))
    yield plane
    loop_thread.run(plane.stop(grace=1))


def test_requests_fail_unavailable_while_redis_is_down_and_nothing_is_admitted(
    loop_thread: LoopThread, own_plane: ControlPlane, own_redis: RedisProcess
) -> None:
    loop_thread.run(own_plane.actions.register_tenant("down"))
    token = loop_thread.run(own_plane.tokens.create("tenant", "down"))
    children = [pb.ActionSpec(name=f"c{i}", task_ref="m:x:y") for i in range(5)]
    with Client(ClientConfig(endpoint=f"127.0.0.1:{own_plane.port}", token=token)) as client:
        run = client.create_run(pb.ActionSpec(task_ref="m:x:y"))

        own_redis.kill()
        with pytest.raises(errors.Unavailable, match="state store unreachable"):
            client.submit_batch(run.name, "root", children)
        with pytest.raises(errors.Unavailable):
            client.get_run(run.name)

        own_redis.start()  # same port and append-only file
        eventually(lambda: client.get_run(run.name).action_count == 1, timeout=15, retry_on=(errors.Unavailable,))
        assert client.submit_batch(run.name, "root", children).admitted == 5
