"""The control plane on a real Redis Cluster: three masters, two servers, two dispatchers.

Every script and transaction keeps to the keys of one hash slot (a tenant's
``{tenant}`` tag, the tokens' ``{_tokens}`` tag), so the cluster runs them
where plain Redis would; these tests prove it with the invariants the
single-server tests hold: no over-admission in a race across two servers, a
fanout through both ends exactly once, and tokens change atomically.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

import fanout
from fanout.config import ClientConfig
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.process_backend import ProcessBackend
from fanout.quota import keys
from fanout.runtime import load_task
from fanout.server.app import ControlPlane, create_server
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread, eventually, race_submitters
from tests.redis_cluster import RedisCluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fanout.py"

# Keys outside any tenant's slot: sets and logs read before a tenant is known.
GLOBAL_KEYS = {keys.TENANTS, keys.READY, keys.ADMIN_AUDIT, keys.LIMIT_EXPIRIES, keys.PENDING_REQUESTS}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    store = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    yield store
    store.stop()


@pytest.fixture(scope="module")
def planes(loop_thread: LoopThread, settings: Settings, cluster: RedisCluster) -> Iterator[list[ControlPlane]]:
    on_cluster = replace(settings, redis_url=cluster.url)
    both = [loop_thread.run(create_server(on_cluster)) for _ in range(2)]
    yield both
    for plane in both:
        loop_thread.run(plane.stop(grace=1))


@pytest.fixture(scope="module")
def dispatchers(
    loop_thread: LoopThread, planes: list[ControlPlane], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Dispatcher]]:
    """One dispatcher on each server."""
    started = []
    for plane in planes:
        token = loop_thread.run(plane.tokens.create("dispatcher"))
        config = ClientConfig(endpoint=f"127.0.0.1:{plane.port}", token=token)
        dispatcher = Dispatcher(config, ProcessBackend(tmp_path_factory.mktemp("actions")), capacity=16)
        started.append((dispatcher, asyncio.run_coroutine_threadsafe(dispatcher.run(), loop_thread.loop)))
    yield [d for d, _ in started]
    for dispatcher, running in started:
        loop_thread.loop.call_soon_threadsafe(dispatcher.stop)
        running.result(30)


@pytest.fixture
def tenant(loop_thread: LoopThread, planes: list[ControlPlane]) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, planes[0], f"127.0.0.1:{planes[0].port}", prefix="cl")
    yield t
    t.client.close()


def every_key(cluster: RedisCluster) -> list[str]:
    found: list[str] = []
    for node in cluster.nodes:
        with redis.Redis(port=node.port, password=node.password) as client:
            found += [k.decode() for k in client.scan_iter(count=1000)]
    return found


def test_racing_submitters_on_two_servers_never_over_admit(tenant: Tenant, planes: list[ControlPlane]) -> None:
    limit = 101  # the root and 100 children
    tenant.set_limits(max_fanout=limit)
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:tests:root"))
    # Half the submitters on each server, each on its own channel.
    admitted, rejected = race_submitters([f"127.0.0.1:{p.port}" for p in planes], tenant.token, run.name)

    held = tenant.client.get_run(run.name).action_count
    assert rejected, "the race must have reached the limit"
    assert held == 1 + sum(admitted)
    assert limit - 8 < held <= limit  # every rejected batch was larger than what was left
    tenant.client.abort_run(run.name)


@pytest.mark.usefixtures("dispatchers")
def test_a_fanout_runs_through_two_servers_and_two_dispatchers_exactly_once(
    tenant: Tenant, planes: list[ControlPlane]
) -> None:
    fanout.init(endpoint=f"127.0.0.1:{planes[1].port}", token=tenant.token)
    run = fanout.run(load_task(f"file:{EXAMPLE}:parallel_data_fetching"), list(range(1, 41)))

    rows = run.outputs()

    assert [r["user_id"] for r in rows] == list(range(1, 41))
    info = tenant.client.get_run(run.name)
    assert (info.phase, info.action_count) == (pb.SUCCEEDED, 41)
    phases = [tenant.client.get_action(run.name, f"{info.root}").phase]
    assert phases == [pb.SUCCEEDED]
    eventually(lambda: tenant.queued() == 0 and tenant.running() == 0)


def test_tokens_are_created_rotated_and_revoked_atomically(loop_thread: LoopThread, planes: list[ControlPlane]) -> None:
    a, b = planes
    made = loop_thread.run(a.tokens.issue("admin", name="cluster-admin"))
    assert loop_thread.run(b.tokens.resolve(made.token)) is not None

    rotated = loop_thread.run(b.tokens.rotate(made.id))
    assert rotated is not None
    assert loop_thread.run(a.tokens.resolve(made.token)) is None
    assert loop_thread.run(a.tokens.resolve(rotated.token)) is not None
    assert loop_thread.run(a.tokens.find_id("cluster-admin")) == made.id

    assert loop_thread.run(a.tokens.revoke_id(made.id))
    assert loop_thread.run(b.tokens.resolve(rotated.token)) is None
    assert loop_thread.run(b.tokens.find_id("cluster-admin")) is None


@pytest.mark.usefixtures("dispatchers")
def test_every_key_but_the_global_indexes_carries_a_hash_tag(
    tenant: Tenant, planes: list[ControlPlane], cluster: RedisCluster
) -> None:
    fanout.init(endpoint=f"127.0.0.1:{planes[0].port}", token=tenant.token)
    fanout.run(load_task(f"file:{EXAMPLE}:parallel_data_fetching"), [1, 2, 3]).outputs()

    found = every_key(cluster)
    untagged = {k for k in found if "{" not in k} - GLOBAL_KEYS
    assert not untagged, f"keys outside any hash tag would scatter a script over slots: {sorted(untagged)}"
    own = [k for k in found if f"{{{tenant.name}}}" in k]
    assert len(own) > 5
    with redis.Redis(port=cluster.nodes[0].port, password=cluster.nodes[0].password) as client:
        assert len({client.cluster("KEYSLOT", k) for k in own}) == 1
