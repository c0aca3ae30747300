"""Retries, aborts, and what happens to a run's leftovers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

import fanout
from fanout.runtime import load_task
from fanout.v1 import actions_pb2 as pb
from tests.conftest import TASKS_FILE, Tenant
from tests.helpers import eventually

pytestmark = pytest.mark.usefixtures("dispatcher")


def start(tenant: Tenant, task: str, *args: object) -> fanout.Run:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    return fanout.run(load_task(f"file:{TASKS_FILE}:{task}"), *args)


def child_phases(tenant: Tenant, run: str, parent: str = "root") -> dict[str, int]:
    phases: dict[str, int] = {}
    for event in tenant.client.watch_children(run, parent):
        if event.HasField("replay_done"):
            return phases
        phases[event.update.name] = event.update.phase
    raise AssertionError("watch ended before replay_done")


def processes_of(run: str) -> list[int]:
    """Pids of live processes running actions of `run`: their output goes to the run's scratch directory."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"/{run}/" in os.readlink(entry / "fd" / "1"):
                    pids.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile, or not ours to read
    return pids


def test_a_failing_task_is_retried_with_backoff_and_then_succeeds(tenant: Tenant, tmp_path: Path) -> None:
    run = start(tenant, "call_flaky", str(tmp_path), 2)

    assert run.outputs() == 3
    (child,) = child_phases(tenant, run.name)
    status = tenant.client.get_action(run.name, child)
    assert (status.phase, status.attempt) == (pb.SUCCEEDED, 3)


def test_retries_run_out_and_the_failure_is_final(tenant: Tenant, tmp_path: Path) -> None:
    run = start(tenant, "call_flaky", str(tmp_path), 5)

    with pytest.raises(fanout.RunFailed, match="attempt 3 fails"):
        run.outputs()
    assert len(list(tmp_path.iterdir())) == 3  # one try and two retries


def test_abort_ends_every_unfinished_action_once_and_frees_the_quota(tenant: Tenant) -> None:
    run = start(tenant, "sleepy_fan", 4, 60)
    eventually(lambda: len(child_phases(tenant, run.name)) == 4)
    eventually(lambda: len(processes_of(run.name)) == 5)

    aborted = tenant.client.abort_run(run.name, reason="test")

    assert aborted == 5
    assert tenant.client.get_run(run.name).phase == pb.ABORTED
    assert set(child_phases(tenant, run.name).values()) == {pb.ABORTED}
    assert tenant.queued() == 0
    assert tenant.running() == 0
    assert tenant.client.abort_run(run.name) == 0
    eventually(lambda: processes_of(run.name) == [])  # the dispatcher stopped them
    with pytest.raises(fanout.RunFailed, match="Aborted"):
        run.outputs()


def test_when_the_root_finishes_its_unfinished_children_are_aborted(tenant: Tenant) -> None:
    run = start(tenant, "fail_fast", 3)

    assert run.outputs() == "bad input 3"
    # The run ends with its root; the rest are aborted in short steps just after.
    expected = [pb.FAILED, pb.ABORTED, pb.ABORTED, pb.ABORTED]
    eventually(lambda: sorted(child_phases(tenant, run.name).values()) == expected)
    assert tenant.queued() == 0
    assert tenant.running() == 0


def test_a_finished_run_is_kept_for_the_tenants_retention_period_only(
    tenant: Tenant, redis_client: redis.Redis
) -> None:
    tenant.set_limits(retention_seconds=2)
    run = start(tenant, "nested", 2, 2)
    assert run.outputs() == 7

    def run_keys() -> list[str]:
        return [key.decode() for key in redis_client.scan_iter(match=f"fo:{{{tenant.name}}}:*{run.name}*")]

    # run, spec, st, res, parents; kids and ev for "" (the root's own), the root and its two children.
    assert len(run_keys()) == 13, run_keys()
    assert tenant.client.get_quota().stored_bytes > 0
    eventually(lambda: run_keys() == [])  # the server's sweeper dropped it
    assert tenant.client.get_quota().stored_bytes == 0
