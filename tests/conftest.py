"""Fixtures: a real Redis server, a real gRPC server and a real dispatcher.

Session fixtures start them once on free ports; each test gets its own
tenant (every key of a tenant has its own prefix), so tests do not see
each other's state.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis

from fanout.client import Client
from fanout.config import ClientConfig
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.process_backend import ProcessBackend
from fanout.quota.limits import Limits
from fanout.server import signing_key
from fanout.server.app import ControlPlane, create_server
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from tests.helpers import LoopThread

TASKS_FILE = Path(__file__).parent / "tasks" / "fanout_tasks.py"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def redis_client(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def settings(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    key_file = tmp_path_factory.mktemp("keys") / "signing-key"
    signing_key.create_if_missing(key_file)
    return Settings.from_env(
        environ={},
        redis_url=redis_server.url,
        signing_key_file=str(key_file),
        listen="127.0.0.1:0",
        metrics_port=-1,
        lease_seconds=5.0,
        reap_interval_seconds=0.5,
    )


@pytest.fixture(scope="session")
def plane(loop_thread: LoopThread, settings: Settings) -> Iterator[ControlPlane]:
    plane = loop_thread.run(create_server(settings))
    yield plane
    loop_thread.run(plane.stop(grace=1))


@pytest.fixture(scope="session")
def endpoint(plane: ControlPlane) -> str:
    return f"127.0.0.1:{plane.port}"


@pytest.fixture(scope="session")
def dispatcher(
    loop_thread: LoopThread, plane: ControlPlane, endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dispatcher]:
    token = loop_thread.run(plane.tokens.create("dispatcher"))
    dispatcher = Dispatcher(
        ClientConfig(endpoint=endpoint, token=token), ProcessBackend(tmp_path_factory.mktemp("actions")), capacity=64
    )
    running = asyncio.run_coroutine_threadsafe(dispatcher.run(), loop_thread.loop)
    yield dispatcher
    loop_thread.loop.call_soon_threadsafe(dispatcher.stop)
    running.result(30)


_tenant_numbers = itertools.count()


@dataclass
class Tenant:
    name: str
    token: str
    client: Client
    plane: ControlPlane
    loop: LoopThread

    def set_limits(self, **limits: int) -> Limits:
        """Change limits straight in Redis, the way an admin change lands."""
        return self.loop.run(self.plane.limits.set(self.name, limits, actor="test", reason="test"))

    def queued(self) -> int:
        return self.loop.run(self.plane.actions.queued(self.name))

    def running(self) -> int:
        return self.loop.run(self.plane.actions.running(self.name))


def make_tenant(loop_thread: LoopThread, plane: ControlPlane, endpoint: str, prefix: str = "t") -> Tenant:
    name = f"{prefix}{os.getpid()}-{next(_tenant_numbers)}"
    loop_thread.run(plane.actions.register_tenant(name))
    token = loop_thread.run(plane.tokens.create("tenant", name))
    return Tenant(name, token, Client(ClientConfig(endpoint=endpoint, token=token)), plane, loop_thread)


@pytest.fixture
def tenant(loop_thread: LoopThread, plane: ControlPlane, endpoint: str) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, plane, endpoint)
    yield t
    t.client.close()


@pytest.fixture
def admin_client(loop_thread: LoopThread, plane: ControlPlane, endpoint: str) -> Iterator[Client]:
    token = loop_thread.run(plane.tokens.create("admin"))
    client = Client(ClientConfig(endpoint=endpoint, token=token))
    yield client
    client.close()


# A Redis and a control plane of the test module's own, with no dispatcher and no
# persistence: for tests that read every command Redis ran (SLOWLOG) or must see
# queued work stay queued. A module changes the server's settings by overriding
# own_settings.


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("own-redis"), appendonly=False).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def own_settings(settings: Settings, own_redis: RedisProcess) -> Settings:
    return replace(settings, redis_url=own_redis.url)


@pytest.fixture(scope="module")
def own_plane(loop_thread: LoopThread, own_settings: Settings) -> Iterator[ControlPlane]:
    plane = loop_thread.run(create_server(own_settings))
    yield plane
    loop_thread.run(plane.stop(grace=1))


@pytest.fixture(scope="module")
def own_endpoint(own_plane: ControlPlane) -> str:
    return f"127.0.0.1:{own_plane.port}"


@pytest.fixture
def own_tenant(loop_thread: LoopThread, own_plane: ControlPlane, own_endpoint: str) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, own_plane, own_endpoint, prefix="own")
    yield t
    t.client.close()


@pytest.fixture(scope="module")
def own_redis_client(own_redis: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url)
    yield client
    client.close()


# Per test: a Redis a test may stop, kill or restart (outages), with persistence
# so a restart finds what was there, and a control plane on it.


@pytest.fixture
def killable_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    store = RedisProcess(tmp_path / "redis").start()
    yield store
    store.stop()


@pytest.fixture
def killable_plane(loop_thread: LoopThread, settings: Settings, killable_redis: RedisProcess) -> Iterator[ControlPlane]:
    plane = loop_thread.run(create_server(replace(settings, redis_url=killable_redis.url)))
    yield plane
    loop_thread.run(plane.stop(grace=1))
