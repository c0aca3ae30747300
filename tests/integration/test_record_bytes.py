"""What actions keep besides their specs and results (printed output, traced calls, reports) counts against
max_stored_bytes like the rest: counted once, refused past the limit, given back with the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from fanout.dispatch.dispatcher import Dispatcher
from fanout.quota import keys
from fanout.quota.errors import QuotaExceeded
from fanout.quota.reports import ReportStore
from fanout.quota.traces import TraceStore
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from tests.conftest import TASKS_FILE, Tenant
from tests.helpers import LoopThread, eventually

PRINTING = Path(__file__).resolve().parents[1] / "tasks" / "printing_tasks.py"
ROOMY = 1 << 40


def stored(r: redis.Redis, tenant: Tenant) -> int:
    return int(r.hget(keys.TenantKeys(tenant.name).stats, "bytes") or 0)


def run_bytes(r: redis.Redis, tenant: Tenant, run: str) -> int:
    return int(r.hget(keys.TenantKeys(tenant.name).run(run), "bytes") or 0)


def test_printed_output_counts_once_in_the_stored_bytes(
    dispatcher: Dispatcher, tenant: Tenant, redis_client: redis.Redis, loop_thread: LoopThread, plane: ControlPlane
) -> None:
    run = start_run(tenant.client, load_task(f"file:{PRINTING}:loud"), 200_000)
    run.wait(timeout=60)
    printed = len(tenant.client.get_logs(run.name, "root").output)
    assert printed >= 200_000

    # The run's share (its spec, its result and what it printed) is what the tenant has stored.
    assert stored(redis_client, tenant) == run_bytes(redis_client, tenant, run.name) >= printed
    before = stored(redis_client, tenant)
    # A report sent again (after a lost answer) keeps the same output: nothing more is counted.
    again = [(run.name, "root", 1, tenant.client.get_logs(run.name, "root").output)]
    loop_thread.run(plane.actions.keep_outputs(tenant.name, again))
    assert stored(redis_client, tenant) == before


def test_traces_and_reports_count_and_stop_at_max_stored_bytes(
    dispatcher: Dispatcher, tenant: Tenant, redis_client: redis.Redis, loop_thread: LoopThread, plane: ControlPlane
) -> None:
    run = start_run(tenant.client, load_task(f"file:{TASKS_FILE}:sleepy"), 0, 30.0)
    root = eventually(lambda: (a := tenant.client.get_action(run.name, "root")).phase == pb.RUNNING and a)
    traces, reports = TraceStore(plane.redis), ReportStore(plane.redis)
    try:
        base = stored(redis_client, tenant)
        record = pb.TraceRecord(key="big", name="f", output=b"x" * 1000, attempt=root.attempt)
        size = len(record.SerializeToString())
        with pytest.raises(QuotaExceeded) as refused:
            loop_thread.run(traces.record(tenant.name, run.name, "root", root.attempt, [record], base + 500))
        assert (refused.value.limit_name, refused.value.used) == ("max_stored_bytes", base)
        assert stored(redis_client, tenant) == base  # refused: nothing kept, nothing counted

        loop_thread.run(traces.record(tenant.name, run.name, "root", root.attempt, [record], ROOMY))
        assert stored(redis_client, tenant) == base + size
        with_trace = stored(redis_client, tenant)
        loop_thread.run(reports.put(tenant.name, run.name, "root", root.attempt, b"r" * 3000, ROOMY))
        assert stored(redis_client, tenant) == with_trace + 3000
        # A report replaces the one before: only the difference counts.
        loop_thread.run(reports.put(tenant.name, run.name, "root", root.attempt, b"r" * 1000, ROOMY))
        assert stored(redis_client, tenant) == with_trace + 1000
        assert run_bytes(redis_client, tenant, run.name) == stored(redis_client, tenant)
    finally:
        tenant.client.abort_run(run.name)
