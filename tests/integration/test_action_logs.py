"""What actions print is kept per attempt and served by GetLogs, `fanout logs` and Run.logs."""

from __future__ import annotations

from pathlib import Path

import pytest

import fanout
from fanout.cli.main import main as cli
from fanout.output import OUTPUT_CAP_BYTES
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread

TASKS = Path(__file__).resolve().parents[1] / "tasks" / "printing_tasks.py"

pytestmark = pytest.mark.usefixtures("dispatcher")


def start(tenant: Tenant, task: str, *args: object) -> fanout.Run:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    return fanout.run(load_task(f"file:{TASKS}:{task}"), *args)


def test_an_actions_stdout_and_stderr_are_kept_once_it_ends(tenant: Tenant) -> None:
    run = start(tenant, "chatty", "a")
    assert run.outputs() == "a"
    assert run.logs() == "out a\nerr a\n"
    logs = tenant.client.get_logs(run.name, "root")
    assert (logs.attempt, logs.phase, logs.kept) == (1, pb.SUCCEEDED, True)
    # Results stay lean: the output is kept apart from what watches carry to parents.
    assert not tenant.client.get_action(run.name, "root").result.output


def test_a_failed_action_keeps_what_it_printed(tenant: Tenant) -> None:
    run = start(tenant, "chatty_then_fails", "b")
    with pytest.raises(fanout.errors.RuntimeUserError):
        run.outputs()
    assert run.logs() == "before failing b\n"


def test_actions_sharing_one_worker_each_get_only_their_own_output(tenant: Tenant) -> None:
    run = start(tenant, "many_in_one_worker", ["p", "q", "r"])
    assert run.outputs() == ["p", "q", "r", "p", "q", "r"]
    children = tenant.client.list_actions(pb.ListActionsRequest(run=run.name)).actions
    printed = {a.name: run.logs(a.name) for a in children if a.name != "root"}
    assert sorted(printed.values()) == sorted(
        [f"{t} line 0\n{t} line 1\n{t} line 2\n" for t in "pqr"] + [f"{t} from a thread\n" for t in "pqr"]
    )
    assert run.logs() == ""  # the parent printed nothing of its children's


def test_only_the_last_mebibyte_is_kept_behind_a_note(tenant: Tenant) -> None:
    run = start(tenant, "loud", OUTPUT_CAP_BYTES + 1000)
    assert run.outputs() == OUTPUT_CAP_BYTES + 1000
    kept = run.logs()
    assert kept == "[... 1000 earlier bytes cut ...]\n" + "x" * OUTPUT_CAP_BYTES


def test_another_tenant_and_a_missing_attempt_are_not_found(
    tenant: Tenant, loop_thread: LoopThread, plane: ControlPlane, endpoint: str
) -> None:
    run = start(tenant, "chatty", "c")
    run.wait()
    other = make_tenant(loop_thread, plane, endpoint, prefix="other")
    try:
        for client, attempt in ((other.client, 0), (tenant.client, 2)):
            with pytest.raises(fanout.errors.NotFound):
                client.get_logs(run.name, "root", attempt)
    finally:
        other.client.close()


def test_fanout_logs_prints_them_and_says_when_nothing_is_kept(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    run = start(tenant, "chatty", "d")
    run.wait()
    monkeypatch.setenv("FANOUT_TOKEN", tenant.token)
    endpoint = ["--endpoint", tenant.client.config.endpoint]

    assert cli(["logs", run.name, *endpoint]) == 0
    assert capsysbinary.readouterr().out == b"out d\nerr d\n"

    queued = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y", command=["sleep", "30"]))
    try:
        assert cli(["logs", queued.name, *endpoint]) == 1
        assert b"nothing kept" in capsysbinary.readouterr().err
    finally:
        tenant.client.abort_run(queued.name)
