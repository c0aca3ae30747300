"""fanout.report (Flyte's flyte.report): a task's HTML report, flushed as it runs, kept with its action."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fanout import errors
from fanout.dispatch.dispatcher import Dispatcher
from fanout.quota.errors import FailedPrecondition
from fanout.quota.reports import ReportStore
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant
from tests.helpers import LoopThread, eventually

TASKS = Path(__file__).resolve().parents[1] / "tasks" / "report_tasks.py"
FANOUT = str(Path(sys.executable).parent / "fanout")

ROOMY = 1 << 40  # a max_stored_bytes no test here comes near


def task(name: str) -> object:
    return load_task(f"file:{TASKS}:{name}")


def report_of(tenant: Tenant, run: str, action: str = "root") -> pb.GetReportResponse:
    return tenant.client.call(tenant.client.actions.GetReport, pb.GetReportRequest(run=run, action=action))


def test_a_report_is_seen_while_the_task_runs_and_kept_whole_at_its_end(
    dispatcher: Dispatcher, tenant: Tenant, endpoint: str, tmp_path: Path
) -> None:
    run = start_run(tenant.client, task("reporting"), str(tmp_path))

    # The first flush, while the task still waits.
    first = eventually(lambda: (r := report_of(tenant, run.name)).kept and r, timeout=30)
    assert b"<h1>Loading</h1>" in first.html
    # The task waits for the marker, so it runs: its RUNNING phase comes through the dispatcher and
    # the flush straight from the worker, and either may be recorded first.
    eventually(lambda: tenant.client.get_action(run.name, "root").phase == pb.RUNNING, timeout=30)
    (tmp_path / "go").touch()

    assert run.wait(timeout=30).outputs() == "done"
    page = run.report()
    assert "<h1>Loaded 3 rows</h1>" in page and "Loading" not in page  # replaced
    assert "<h2>Rows</h2><table>" in page  # its own tab, under its name
    assert "the end, never flushed by the task" in page  # the task's end flushed it
    assert page.startswith("<!doctype html>")

    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    env.update(FANOUT_ENDPOINT=endpoint, FANOUT_TOKEN=tenant.token, FANOUT_CONFIG=os.devnull)
    written = subprocess.run(
        [FANOUT, "report", run.name, "-o", str(tmp_path / "report.html")], env=env, capture_output=True, text=True
    )
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "report.html").read_text() == page


def test_a_plain_task_reports_from_its_thread(dispatcher: Dispatcher, tenant: Tenant) -> None:
    run = start_run(tenant.client, task("plain_reporting"), 3)
    assert run.wait(timeout=30).outputs() == 3
    assert all(f"<li>row {i}</li>" in run.report() for i in range(3))


def test_a_failed_task_keeps_its_report(dispatcher: Dispatcher, tenant: Tenant) -> None:
    run = start_run(tenant.client, task("reporting_then_failing"))
    with pytest.raises(errors.RunFailed):
        run.wait(timeout=30).outputs()
    assert "got this far" in run.report()


def test_without_report_true_nothing_is_kept(dispatcher: Dispatcher, tenant: Tenant, endpoint: str) -> None:
    run = start_run(tenant.client, task("not_reporting"))
    assert run.wait(timeout=30).outputs() == "quiet"
    assert report_of(tenant, run.name) == pb.GetReportResponse(html=b"", kept=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    env.update(FANOUT_ENDPOINT=endpoint, FANOUT_TOKEN=tenant.token, FANOUT_CONFIG=os.devnull)
    shown = subprocess.run([FANOUT, "report", run.name], env=env, capture_output=True, text=True)
    assert shown.returncode == 1 and "has no report" in shown.stderr


def test_an_ended_action_report_cannot_change(
    dispatcher: Dispatcher, tenant: Tenant, loop_thread: LoopThread, plane: ControlPlane
) -> None:
    run = start_run(tenant.client, task("plain_reporting"), 1)
    run.wait(timeout=30)
    store = ReportStore(plane.redis)
    with pytest.raises(FailedPrecondition, match="not running"):
        loop_thread.run(store.put(tenant.name, run.name, "root", 1, b"<p>rewritten</p>", ROOMY))
    assert "rewritten" not in run.report()
