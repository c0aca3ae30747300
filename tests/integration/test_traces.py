"""@fanout.trace: traced calls inside an action are recorded, and a retry gets them back without running them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout import errors
from fanout.dispatch.dispatcher import Dispatcher
from fanout.quota import traces
from fanout.quota.errors import FailedPrecondition, InvalidArgument
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from tests.conftest import TASKS_FILE, Tenant
from tests.helpers import LoopThread, eventually
from tests.tasks import fanout_tasks

FANOUT = str(Path(sys.executable).parent / "fanout")

ROOMY = 1 << 40  # a max_stored_bytes no test here comes near


def test_a_retry_replays_the_traced_calls_of_the_failed_attempt(
    dispatcher: Dispatcher, tenant: Tenant, endpoint: str, tmp_path: Path
) -> None:
    run = start_run(tenant.client, load_task(f"file:{TASKS_FILE}:traced_then_flaky"), str(tmp_path), 30)

    assert run.wait(timeout=60).outputs() == sum(x * x for x in range(30))

    assert sorted(p.name for p in tmp_path.glob("attempt-*")) == ["attempt-1", "attempt-2"]
    # Each square ran once, in the first attempt; the second got all thirty back from the records.
    assert all((tmp_path / f"square-{x}").read_text() == "ran\n" for x in range(30))
    listed = tenant.client.call(tenant.client.actions.ListTraces, pb.ListTracesRequest(run=run.name, action="root"))
    assert len(listed.records) == 30 and listed.next_cursor == ""
    assert {record.attempt for record in listed.records} == {1}
    assert {record.name for record in listed.records} == {"traced_square"}
    # And `fanout get` tells them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    env.update(FANOUT_ENDPOINT=endpoint, FANOUT_TOKEN=tenant.token, FANOUT_CONFIG=os.devnull)
    shown = subprocess.run([FANOUT, "get", run.name], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "traced  30 calls: traced_square ×30" in shown.stdout


def test_outside_an_action_a_traced_function_simply_runs(tmp_path: Path) -> None:
    """A plain call, or local mode (no controller either): nothing to record, nothing to replay."""
    assert asyncio.run(fanout_tasks.traced_square(str(tmp_path), 4)) == 16
    assert asyncio.run(fanout_tasks.traced_square(str(tmp_path), 4)) == 16
    assert (tmp_path / "square-4").read_text() == "ran\nran\n"


@pytest.fixture
def store(loop_thread: LoopThread, plane: ControlPlane) -> Iterator[traces.TraceStore]:
    yield traces.TraceStore(plane.redis)


def test_only_a_leased_attempt_records(
    dispatcher: Dispatcher, tenant: Tenant, store: traces.TraceStore, loop_thread: LoopThread, tmp_path: Path
) -> None:
    run = start_run(tenant.client, load_task(f"file:{TASKS_FILE}:fan_squares"), 2)
    run.wait(timeout=60)
    record = pb.TraceRecord(key="k1", name="f", output=b"1")

    with pytest.raises(FailedPrecondition, match="not running"):  # it ended: nothing may follow it
        loop_thread.run(store.record(tenant.name, run.name, "root", 1, [record], ROOMY))
    with pytest.raises(FailedPrecondition, match="not running"):  # a run that never was (or was dropped)
        loop_thread.run(store.record(tenant.name, "rnosuchrun", "root", 1, [record], ROOMY))
    assert loop_thread.run(store.page(tenant.name, run.name, "root", "")) == ([], "")


def test_a_tenant_token_cannot_record_traces(tenant: Tenant) -> None:
    request = pb.RecordTracesRequest(run="rwhatever", action="root", records=[pb.TraceRecord(key="k", name="f")])
    with pytest.raises(errors.AuthError):
        tenant.client.call(tenant.client.actions.RecordTraces, request)


def test_a_run_holds_at_most_its_cap_of_traces(
    dispatcher: Dispatcher,
    tenant: Tenant,
    store: traces.TraceStore,
    loop_thread: LoopThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(traces, "MAX_PER_RUN", 5)
    run = start_run(tenant.client, load_task(f"file:{TASKS_FILE}:sleepy"), 0, 30.0)
    root = eventually(lambda: (a := tenant.client.get_action(run.name, "root")).phase == pb.RUNNING and a)
    try:

        def records(*keys: str) -> list[pb.TraceRecord]:
            return [pb.TraceRecord(key=key, name="f", output=b"1") for key in keys]

        loop_thread.run(store.record(tenant.name, run.name, "root", root.attempt, records("a", "b", "c"), ROOMY))
        with pytest.raises(FailedPrecondition, match="holds 5 traces"):  # 3 + 3 > 5: none of the three
            loop_thread.run(store.record(tenant.name, run.name, "root", root.attempt, records("d", "e", "f"), ROOMY))
        big = [pb.TraceRecord(key=k, name="f", output=b"x" * (3 << 20)) for k in ("p", "q")]
        with pytest.raises(InvalidArgument, match="bytes of outputs per call"):  # one script copies little
            loop_thread.run(store.record(tenant.name, run.name, "root", root.attempt, big, ROOMY))
        with pytest.raises(FailedPrecondition, match="not running"):  # another attempt's token may not write
            loop_thread.run(store.record(tenant.name, run.name, "root", root.attempt + 1, records("g"), ROOMY))
        kept, _ = loop_thread.run(store.page(tenant.name, run.name, "root", ""))
        assert sorted(r.key for r in kept) == ["a", "b", "c"]
    finally:
        tenant.client.abort_run(run.name)
