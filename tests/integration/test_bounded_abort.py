"""Aborts of big runs are walked in short scripts, and each action is aborted exactly once.

The Redis and the server are this module's own, with no dispatcher: the
session's dispatcher would lease these actions and race the counts.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from fanout import errors
from fanout.quota.actions import LeaseRef
from fanout.quota.phases import ABORTED
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread, eventually

# Generous against a busy 2-core machine; the chunks aim at a few milliseconds each.
SCRIPT_BOUND_US = 50_000
BATCH = 10_000


@pytest.fixture
def own_tenant(loop_thread: LoopThread, own_plane: ControlPlane) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, own_plane, f"127.0.0.1:{own_plane.port}", prefix="ab")
    yield t
    t.client.close()


def big_run(tenant: Tenant, children: int) -> str:
    tenant.set_limits(max_fanout=children + 1)
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:tests:root")).name
    names = (f"c{i}" for i in range(children))
    while batch := list(itertools.islice(names, BATCH)):
        specs = [pb.ActionSpec(name=n, task_ref="module:tests:noop", inputs=b"{}") for n in batch]
        tenant.client.submit_batch(run, "root", specs)
    return run


def slow_scripts(client: redis.Redis) -> list[tuple[int, bytes]]:
    """(microseconds, command) of the scripts in the slow log."""
    entries: list[dict[str, Any]] = client.slowlog_get(1000)
    return [
        (int(e["duration"]), bytes(e["command"][:80]))
        for e in entries
        if bytes(e["command"]).split(b" ")[0].upper() in (b"EVALSHA", b"EVAL")
    ]


def phases_of(client: redis.Redis, tenant: Tenant, run: str) -> set[int]:
    states: list[bytes] = client.hvals(f"fo:{{{tenant.name}}}:st:{run}")  # type: ignore[assignment]
    return {int(s.split(b":")[0]) for s in states}


def test_a_large_abort_runs_in_short_scripts_and_counts_every_action(
    own_tenant: Tenant, own_redis_client: redis.Redis
) -> None:
    run = big_run(own_tenant, 30_000)
    own_redis_client.config_set("slowlog-log-slower-than", SCRIPT_BOUND_US)
    own_redis_client.config_set("slowlog-max-len", 1000)
    own_redis_client.slowlog_reset()

    aborted = own_tenant.client.abort_run(run, reason="test")

    slow = slow_scripts(own_redis_client)
    assert slow == [], f"{len(slow)} scripts over {SCRIPT_BOUND_US} us, the longest {max(slow)}"
    assert aborted == 30_001
    assert own_tenant.client.get_run(run).phase == pb.ABORTED
    assert phases_of(own_redis_client, own_tenant, run) == {ABORTED}
    assert own_tenant.queued() == 0
    assert own_tenant.client.abort_run(run) == 0


def test_an_abort_cut_short_is_finished_by_the_servers_loop_once(
    own_tenant: Tenant, own_redis_client: redis.Redis, own_plane: ControlPlane, loop_thread: LoopThread
) -> None:
    run = big_run(own_tenant, 3_000)
    store = own_plane.actions

    # The server that began the abort dies after one chunk: the periodic loop takes over.
    assert loop_thread.run(store.begin_abort(own_tenant.name, run)) is True
    assert own_tenant.client.get_run(run).phase == pb.ABORTED
    loop_thread.run(store.close_run(own_tenant.name, run, max_steps=1))

    eventually(lambda: own_tenant.queued() == 0)
    assert phases_of(own_redis_client, own_tenant, run) == {ABORTED}
    assert own_redis_client.hget(f"fo:{{{own_tenant.name}}}:run:{run}", "aborted") == b"3001"
    assert own_tenant.client.abort_run(run) == 0


def test_running_actions_of_an_aborted_run_are_told_to_stop_before_the_cleanup_reaches_them(
    own_plane: ControlPlane, loop_thread: LoopThread
) -> None:
    store = own_plane.actions
    tenant = "ab-unlisted"  # not registered: the server's loop leaves it alone

    async def body() -> tuple[list[LeaseRef], list[LeaseRef]]:
        await store.create_run(tenant, "r1", "root", b"")
        await store.lease(tenant, 10)  # the root
        await store.admit(tenant, "r1", "root", [("a", b""), ("b", b"")])
        kids = await store.lease(tenant, 10)
        assert {k.name for k in kids} == {"a", "b"}
        assert await store.begin_abort(tenant, "r1")
        refs = [LeaseRef("r1", k.name, k.attempt) for k in kids]
        _, _, phase, _, _ = await store.get_action(tenant, "r1", "a")
        assert phase < ABORTED  # the cleanup has not reached it yet
        return refs, (await store.heartbeat(tenant, refs))[1]

    refs, cancelled = loop_thread.run(body())
    assert sorted(c.name for c in cancelled) == sorted(r.name for r in refs)


def subtree_run(tenant: Tenant, kids: int, grandkids: int) -> str:
    """root -> mid -> `kids` children, the first of which has `grandkids` children of its own."""
    tenant.set_limits(max_fanout=kids + grandkids + 2)
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:tests:root")).name
    tenant.client.submit_batch(run, "root", [pb.ActionSpec(name="mid", task_ref="module:tests:noop")])
    for parent, count in (("mid", kids), ("k0", grandkids)):
        names = (f"{parent}-{i}" if parent == "k0" else f"k{i}" for i in range(count))
        while batch := list(itertools.islice(names, BATCH)):
            specs = [pb.ActionSpec(name=n, task_ref="module:tests:noop", inputs=b"{}") for n in batch]
            tenant.client.submit_batch(run, parent, specs)
    return run


def phases_by_name(client: redis.Redis, tenant: Tenant, run: str) -> dict[str, int]:
    states: dict[bytes, bytes] = client.hgetall(f"fo:{{{tenant.name}}}:st:{run}")  # type: ignore[assignment]
    return {n.decode(): int(s.split(b":")[0]) for n, s in states.items()}


def test_aborting_one_action_walks_its_descendants_in_short_scripts(
    own_tenant: Tenant, own_redis_client: redis.Redis
) -> None:
    run = subtree_run(own_tenant, 20_000, 2_000)
    own_redis_client.config_set("slowlog-log-slower-than", SCRIPT_BOUND_US)
    own_redis_client.config_set("slowlog-max-len", 1000)
    own_redis_client.slowlog_reset()

    aborted = own_tenant.client.abort_actions(run, ["mid"], reason="test")

    slow = slow_scripts(own_redis_client)
    assert slow == [], f"{len(slow)} scripts over {SCRIPT_BOUND_US} us, the longest {max(slow)}"
    assert aborted == 22_001
    phases = phases_by_name(own_redis_client, own_tenant, run)
    assert phases.pop("root") == pb.QUEUED  # the run goes on: only mid's subtree ended
    assert set(phases.values()) == {ABORTED}
    assert own_tenant.queued() == 1
    assert own_tenant.client.get_run(run).phase == pb.QUEUED
    assert own_tenant.client.abort_actions(run, ["mid"]) == 0


def test_an_action_abort_cut_short_is_finished_by_the_servers_loop_once(
    own_tenant: Tenant, own_redis_client: redis.Redis, own_plane: ControlPlane, loop_thread: LoopThread
) -> None:
    run = subtree_run(own_tenant, 3_000, 500)
    store = own_plane.actions

    # The server that began the abort dies after one step of the walk: the periodic loop takes over.
    assert loop_thread.run(store.begin_abort_actions(own_tenant.name, run, ["mid"])) == 1
    stepped, done = loop_thread.run(store.walk_aborts(own_tenant.name, run, max_steps=1))
    assert 0 < stepped < 3_500 and not done

    eventually(lambda: own_tenant.queued() == 1)  # the root only
    phases = phases_by_name(own_redis_client, own_tenant, run)
    assert phases.pop("root") == pb.QUEUED
    assert set(phases.values()) == {ABORTED}
    finished: Any = own_redis_client.xlen(f"fo:{{{own_tenant.name}}}:ev:{run}:mid")
    assert finished == 3_000  # one ABORTED event per child: none aborted twice
    assert own_redis_client.zcard(f"fo:{{{own_tenant.name}}}:aborting") == 0


def test_an_abort_of_many_names_checks_them_all_first_then_aborts_in_short_scripts(
    own_tenant: Tenant, own_redis_client: redis.Redis
) -> None:
    run = subtree_run(own_tenant, 1_000, 0)
    names = [f"k{i}" for i in range(1_000)]
    with pytest.raises(errors.NotFound, match="k-missing"):
        own_tenant.client.abort_actions(run, [*names[:999], "k-missing"])
    assert set(phases_by_name(own_redis_client, own_tenant, run).values()) == {pb.QUEUED}  # nothing changed

    own_redis_client.config_set("slowlog-log-slower-than", SCRIPT_BOUND_US)
    own_redis_client.slowlog_reset()
    assert own_tenant.client.abort_actions(run, names) == 1_000
    assert slow_scripts(own_redis_client) == []
    phases = phases_by_name(own_redis_client, own_tenant, run)
    assert (phases.pop("root"), phases.pop("mid")) == (pb.QUEUED, pb.QUEUED)
    assert set(phases.values()) == {ABORTED}
    assert own_tenant.queued() == 2
