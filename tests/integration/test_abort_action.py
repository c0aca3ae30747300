"""Aborting one action and its descendants, cancellation of awaited children, and max_queued_time,
through the real server, dispatcher and process backend (every action a real subprocess)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from fanout.cli.main import main as cli_main
from fanout.dispatch.dispatcher import Dispatcher
from fanout.quota import keys
from fanout.runtime import load_task
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant
from tests.helpers import eventually

TASKS = Path(__file__).resolve().parents[1] / "tasks" / "abort_tasks.py"

pytestmark = pytest.mark.usefixtures("dispatcher")


def start(tenant: Tenant, task: str, *args: object) -> fanout.Run:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    return fanout.run(load_task(f"file:{TASKS}:{task}"), *args)


def states(r: redis.Redis, tenant: Tenant, run: str) -> dict[str, tuple[int, str]]:
    """Every action of the run: name -> (phase, parent), as the server keeps them."""
    raw: Any = r.hgetall(keys.TenantKeys(tenant.name).states(run))
    out = {}
    for name, state in raw.items():
        phase, _, parent = state.decode().split(":", 2)
        out[name.decode()] = (int(phase), parent)
    return out


def children(r: redis.Redis, tenant: Tenant, run: str, parent: str) -> dict[str, int]:
    return {name: phase for name, (phase, p) in states(r, tenant, run).items() if p == parent}


def phase_events(r: redis.Redis, tenant: Tenant, run: str, parent: str) -> list[tuple[float, str, int]]:
    """(seconds, action, phase) of every change the server recorded under `parent`, in order."""
    entries: Any = r.xrange(keys.TenantKeys(tenant.name).events(run, parent))
    return [
        (int(entry_id.decode().split("-")[0]) / 1000, fields[b"n"].decode(), int(fields[b"p"]))
        for entry_id, fields in entries
    ]


def running_on(dispatcher: Dispatcher, run: str) -> set[str]:
    """The actions of `run` the dispatcher still runs (its own table, read from the test's thread)."""
    return {action.spec.name for action, _ in list(dispatcher._running.values()) if action.run == run}


def counters_back_to_zero(tenant: Tenant) -> None:
    eventually(lambda: tenant.queued() == 0 and tenant.running() == 0)


def test_fanout_abort_run_action_stops_it_and_its_descendants_and_the_parent_sees_aborted(
    as_tenant: Tenant, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str], dispatcher: Dispatcher
) -> None:
    tenant = as_tenant
    run = start(tenant, "awaits_an_aborted_child")
    root = tenant.client.get_run(run.name).root
    (mid,) = eventually(lambda: list(children(redis_client, tenant, run.name, root)))
    # Its two children run (real subprocesses) before the abort.
    eventually(lambda: list(children(redis_client, tenant, run.name, mid).values()) == [pb.RUNNING] * 2)
    subtree = {mid, *children(redis_client, tenant, run.name, mid)}
    assert running_on(dispatcher, run.name) >= subtree

    code = cli_main(["abort", run.name, mid, "--reason", "test", "--json"])

    assert code == 0
    assert '"aborted": 3' in capsys.readouterr().out
    # The dispatcher stops the aborted subtree while the parent is still running.
    eventually(lambda: running_on(dispatcher, run.name).isdisjoint(subtree), timeout=5, retry_on=(RuntimeError,))
    assert run.outputs() == ["ActionAbortedError", "ABORTED"]
    everything = states(redis_client, tenant, run.name)
    assert everything[root][0] == pb.SUCCEEDED
    assert {name: phase for name, (phase, _) in everything.items() if name != root} == dict.fromkeys(
        [mid, *children(redis_client, tenant, run.name, mid)], pb.ABORTED
    )
    counters_back_to_zero(tenant)


def test_abort_of_a_finished_or_unknown_action(as_tenant: Tenant, capsys: pytest.CaptureFixture[str]) -> None:
    tenant = as_tenant
    run = start(tenant, "middle", 2, 0.1)
    run.wait()
    root = tenant.client.get_run(run.name).root
    assert cli_main(["abort", run.name, root]) == 0
    assert "nothing to abort" in capsys.readouterr().out
    with pytest.raises(fanout.errors.NotFound, match="no-such-action"):
        tenant.client.abort_actions(run.name, [root, "no-such-action"])
    assert cli_main(["abort", run.name, "no-such-action"]) == 1
    assert "action 'no-such-action' not found" in capsys.readouterr().err
    for bad, why in (([], "at least one"), (["x"] * 1001, "the most is 1000"), (["no/slash"], "invalid")):
        with pytest.raises(fanout.errors.InvalidRequest, match=why):
            tenant.client.abort_actions(run.name, bad)
    with pytest.raises(fanout.errors.NotFound):
        tenant.client.abort_actions("no-such-run", ["x"])


@pytest.mark.parametrize("task", ["cancels_a_child", "cancels_a_child_reused"])
def test_cancelling_the_await_of_a_child_aborts_it_on_the_server_within_a_second(
    tenant: Tenant, redis_client: redis.Redis, task: str
) -> None:
    run = start(tenant, task, 3.0, 6.0)
    root = tenant.client.get_run(run.name).root
    (child,) = eventually(lambda: list(children(redis_client, tenant, run.name, root)))
    eventually(lambda: tenant.client.get_action(run.name, child).phase == pb.RUNNING)
    # Seen through GetAction while its parent still runs: the parent's end did not do it.
    eventually(lambda: tenant.client.get_action(run.name, child).phase == pb.ABORTED, timeout=5)
    assert tenant.client.get_action(run.name, root).phase == pb.RUNNING

    cancelled_at = run.outputs()
    ((aborted_at, _, _),) = [e for e in phase_events(redis_client, tenant, run.name, root) if e[2] == pb.ABORTED]
    assert aborted_at - cancelled_at < 1.0
    counters_back_to_zero(tenant)


def test_the_first_failure_of_a_plain_gather_aborts_its_siblings(tenant: Tenant, redis_client: redis.Redis) -> None:
    run = start(tenant, "outlives_a_failed_gather", 6.0)
    root = tenant.client.get_run(run.name).root
    (mid,) = eventually(lambda: list(children(redis_client, tenant, run.name, root)))
    eventually(lambda: sorted(children(redis_client, tenant, run.name, mid).values()) == [pb.FAILED, *[pb.ABORTED] * 2])
    assert tenant.client.get_action(run.name, root).phase == pb.RUNNING

    failed_at = run.outputs()
    aborted = [at for at, _, phase in phase_events(redis_client, tenant, run.name, mid) if phase == pb.ABORTED]
    assert len(aborted) == 2
    assert max(aborted) - failed_at < 1.0
    counters_back_to_zero(tenant)


def test_an_action_queued_past_its_max_queued_time_ends_timed_out(tenant: Tenant, redis_client: redis.Redis) -> None:
    tenant.set_limits(max_concurrency=1)
    run = start(tenant, "queues_past_its_limit", 3.0)

    assert run.outputs() == ["float", "TaskTimeoutError"]
    root = tenant.client.get_run(run.name).root
    timed_out = [
        tenant.client.get_action(run.name, name)
        for name, phase in children(redis_client, tenant, run.name, root).items()
        if phase == pb.TIMED_OUT
    ]
    assert [(a.attempt, a.result.error.type) for a in timed_out] == [(0, "QueuedTooLong")]  # never started
    counters_back_to_zero(tenant)


@pytest.fixture
def as_tenant(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> Tenant:
    """The tenant, with the CLI pointed at it the way a user's shell is (FANOUT_ENDPOINT, FANOUT_TOKEN)."""
    monkeypatch.setenv("FANOUT_ENDPOINT", tenant.client.config.endpoint)
    monkeypatch.setenv("FANOUT_TOKEN", tenant.token)
    return tenant
