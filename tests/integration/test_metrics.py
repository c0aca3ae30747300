"""Every quota decision is counted, every RPC and script call too, and /metrics serves it to Prometheus.

Names changed with issue 9: admission counters carry a `tenant` label, and the
near-limit counter is fanout_batches_near_fanout_limit_total (was
fanout_fanout_near_limit_total, whose name stuttered and did not say it counts batches).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from fanout import errors
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.server import metrics
from fanout.server.metrics_http import MetricsServer
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant


@pytest.fixture(autouse=True)
def every_tenant_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole suite makes more tenants than the default label cap in one process.
    monkeypatch.setattr(metrics.tenant_label, "cap", 10**9)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_admissions_and_rejections_are_counted_by_tenant_and_reason(tenant: Tenant) -> None:
    tenant.set_limits(max_fanout=10)
    t = tenant.name
    run = tenant.client.create_run(pb.ActionSpec(task_ref="m:x:y"))
    admitted_after_run = sample("fanout_admission_decisions_total", tenant=t, decision="admitted")

    tenant.client.submit_batch(run.name, "root", [pb.ActionSpec(name=f"a{i}", task_ref="m:x:y") for i in range(8)])
    with pytest.raises(errors.FanoutLimitExceeded):
        tenant.client.submit_batch(run.name, "root", [pb.ActionSpec(name=f"b{i}", task_ref="m:x:y") for i in range(5)])

    assert admitted_after_run == 1  # the run's root
    assert sample("fanout_admission_decisions_total", tenant=t, decision="admitted") == 2
    assert sample("fanout_admission_decisions_total", tenant=t, decision="rejected_max_fanout") == 1
    assert sample("fanout_actions_admitted_total", tenant=t) == 9
    assert sample("fanout_batches_near_fanout_limit_total", tenant=t) == 1  # 9 of 10 held


def test_tenant_labels_are_capped() -> None:
    labels = metrics.TenantLabels(cap=2)
    assert [labels("a"), labels("b"), labels("c"), labels("a")] == ["a", "b", metrics.OTHER_TENANT, "a"]


def test_rpcs_are_counted_by_service_method_and_code(tenant: Tenant, endpoint: str) -> None:
    labels = {"service": "fanout.v1.ActionService", "method": "GetQuota"}
    ok_before = sample("fanout_grpc_requests_total", **labels, code="OK")
    refused_before = sample("fanout_grpc_requests_total", **labels, code="UNAUTHENTICATED")
    timed_before = sample("fanout_grpc_request_duration_seconds_count", **labels)

    tenant.client.get_quota()
    stranger = Client(ClientConfig(endpoint=endpoint, token="not-a-token"))
    try:
        with pytest.raises(errors.AuthError):
            stranger.get_quota()
    finally:
        stranger.close()

    assert sample("fanout_grpc_requests_total", **labels, code="OK") == ok_before + 1
    assert sample("fanout_grpc_requests_total", **labels, code="UNAUTHENTICATED") == refused_before + 1
    assert sample("fanout_grpc_request_duration_seconds_count", **labels) == timed_before + 2


def test_script_calls_are_timed(tenant: Tenant) -> None:
    before = sample("fanout_redis_script_duration_seconds_count", script="admit")
    run = tenant.client.create_run(pb.ActionSpec(task_ref="m:x:y"))
    tenant.client.submit_batch(run.name, "root", [pb.ActionSpec(name="a", task_ref="m:x:y")])
    assert sample("fanout_redis_script_duration_seconds_count", script="admit") > before


@pytest.fixture
def metrics_server() -> Iterator[MetricsServer]:
    server = MetricsServer(0).start()
    yield server
    server.stop()


def test_metrics_are_served_over_http(metrics_server: MetricsServer) -> None:
    with urllib.request.urlopen(metrics_server.url, timeout=10) as response:
        body = response.read().decode()

    assert "# TYPE fanout_admission_decisions_total counter" in body
    assert "fanout_dispatch_latency_seconds_bucket" in body
