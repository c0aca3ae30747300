"""A failed action's folder is kept for reading its log, within bounds."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from fanout.client import TERMINAL_PHASES
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.process_backend import ProcessBackend
from fanout.dispatch.workdirs import KEPT_LOG_BYTES, KEPT_RESULT_BYTES, WorkRoot
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from tests.conftest import Tenant
from tests.helpers import eventually


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_a_failed_action_that_wrote_50_mb_keeps_only_its_logs_tail(tenant: Tenant, dispatcher: Dispatcher) -> None:
    script = "head -c 50000000 /dev/zero; head -c 20000000 /dev/zero > scratch.bin; echo the last words; exit 3"
    run = tenant.client.create_run(pb.ActionSpec(task_ref="noisy", command=["sh", "-c", script]))
    eventually(lambda: tenant.client.get_run(run.name).phase in TERMINAL_PHASES, timeout=60)
    assert tenant.client.get_action(run.name, "root").phase == pb.FAILED
    folder = cast(ProcessBackend, dispatcher.backend).work_root / tenant.name / run.name / "root.1"

    eventually(lambda: size(folder) <= KEPT_LOG_BYTES + KEPT_RESULT_BYTES, timeout=10)
    assert [f.name for f in folder.iterdir()] == ["output.log"]
    assert (folder / "output.log").read_bytes().endswith(b"the last words\n")


def test_the_oldest_kept_failures_go_first_past_the_cap(tmp_path: Path) -> None:
    work = WorkRoot(tmp_path, max_kept_failures=3)
    folders = []
    for i in range(5):
        action = dpb.LeasedAction(tenant="t", run="r", spec=pb.ActionSpec(name=f"a{i}"), attempt=1)
        folder = work.prepare(action)
        (folder / "output.log").write_text(f"failure {i}\n")
        work.release(folder, succeeded=False)
        folders.append(folder)

    assert [folder.exists() for folder in folders] == [False, False, True, True, True]
    # A restart counts what it finds against the same cap.
    restarted = WorkRoot(tmp_path, max_kept_failures=2)
    assert restarted.claim()
    assert restarted.leftovers() == []
    assert [folder.exists() for folder in folders] == [False, False, False, True, True]
    restarted.close()


def test_an_aborted_action_that_wrote_50_mb_keeps_only_its_logs_tail(
    tenant: Tenant, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    marker = tmp_path / "written"
    script = f"head -c 50000000 /dev/zero; echo still running; touch {marker}; sleep 60"
    run = tenant.client.create_run(pb.ActionSpec(task_ref="noisy", command=["sh", "-c", script]))
    folder = cast(ProcessBackend, dispatcher.backend).work_root / tenant.name / run.name / "root.1"
    eventually(marker.exists, timeout=60)

    tenant.client.abort_run(run.name)

    eventually(lambda: size(folder) <= KEPT_LOG_BYTES + KEPT_RESULT_BYTES, timeout=10)
    assert (folder / "output.log").read_bytes().endswith(b"still running\n")
