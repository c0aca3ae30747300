"""Every quota decision is counted, and /metrics serves it to Prometheus."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import REGISTRY

from fanout import errors
from fanout.server.metrics_http import MetricsServer
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_admissions_and_rejections_are_counted_by_reason(tenant: Tenant) -> None:
    tenant.set_limits(max_fanout=10)
    run = tenant.client.create_run(pb.ActionSpec(task_ref="m:x:y"))
    before = {
        "admitted": sample("fanout_admission_decisions_total", decision="admitted"),
        "rejected": sample("fanout_admission_decisions_total", decision="rejected_max_fanout"),
        "actions": sample("fanout_actions_admitted_total"),
        "near": sample("fanout_fanout_near_limit_total"),
    }

    tenant.client.submit_batch(run.name, "root", [pb.ActionSpec(name=f"a{i}", task_ref="m:x:y") for i in range(8)])
    with pytest.raises(errors.FanoutLimitExceeded):
        tenant.client.submit_batch(run.name, "root", [pb.ActionSpec(name=f"b{i}", task_ref="m:x:y") for i in range(5)])

    assert sample("fanout_admission_decisions_total", decision="admitted") == before["admitted"] + 1
    assert sample("fanout_admission_decisions_total", decision="rejected_max_fanout") == before["rejected"] + 1
    assert sample("fanout_actions_admitted_total") == before["actions"] + 8
    assert sample("fanout_fanout_near_limit_total") == before["near"] + 1  # 9 of 10 held


def test_metrics_are_served_over_http() -> None:
    server = MetricsServer(0).start()
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            body = response.read().decode()
    finally:
        server.stop()

    assert "# TYPE fanout_admission_decisions_total counter" in body
    assert "fanout_dispatch_latency_seconds_bucket" in body
