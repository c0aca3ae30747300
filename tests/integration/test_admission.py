"""Admission over a real gRPC channel: all or nothing, exactly once, never past a limit.

These tests read usage as admission left it, so they run on a control plane of
their own with no dispatcher: leases are pushed, and the session's dispatcher
would otherwise take (and fail) their actions the moment they are admitted.
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from fanout import errors
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc
from tests.conftest import Tenant
from tests.helpers import race_submitters
from tests.own_server import own_server_endpoint, own_server_tenant  # noqa: F401 (fixtures)


def specs(prefix: str, n: int) -> list[pb.ActionSpec]:
    return [pb.ActionSpec(name=f"{prefix}{i}", task_ref="module:tests:noop", inputs=b"{}") for i in range(n)]


def new_run(tenant: Tenant) -> pb.Run:
    return tenant.client.create_run(pb.ActionSpec(task_ref="module:tests:root"))


def test_over_the_limit_the_status_carries_a_quota_failure_and_nothing_is_written(
    tenant: Tenant, endpoint: str
) -> None:
    tenant.set_limits(max_fanout=10)
    run = new_run(tenant)
    stub = actions_pb2_grpc.ActionServiceStub(grpc.insecure_channel(endpoint))

    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitBatch(
            pb.SubmitBatchRequest(run=run.name, parent="root", actions=specs("c", 10)),
            metadata=[("authorization", f"Bearer {tenant.token}")],
        )

    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(info.value)
    assert status is not None
    failure = error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(failure)
    assert failure.violations[0].subject == "max_fanout"
    assert failure.violations[0].description == "limit 10, used 1, requested 10"
    assert tenant.client.get_run(run.name).action_count == 1
    assert tenant.queued() == 1  # the root only
    with pytest.raises(errors.NotFound):
        tenant.client.get_action(run.name, "c0")


def test_the_sdk_error_names_the_limit(tenant: Tenant) -> None:
    tenant.set_limits(max_fanout=3)
    run = new_run(tenant)

    with pytest.raises(errors.FanoutLimitExceeded) as info:
        tenant.client.submit_batch(run.name, "root", specs("c", 3))

    assert (info.value.limit_name, info.value.limit, info.value.used, info.value.requested) == ("max_fanout", 3, 1, 3)


def test_a_resubmitted_batch_is_admitted_and_charged_once(tenant: Tenant) -> None:
    run = new_run(tenant)

    first = tenant.client.submit_batch(run.name, "root", specs("c", 10))
    again = tenant.client.submit_batch(run.name, "root", specs("c", 10))
    overlapping = tenant.client.submit_batch(run.name, "root", specs("c", 12))

    assert (first.admitted, first.already_present) == (10, 0)
    assert (again.admitted, again.already_present) == (0, 10)
    assert (overlapping.admitted, overlapping.already_present) == (2, 10)
    assert tenant.client.get_run(run.name).action_count == 13
    assert tenant.queued() == 13


def test_a_dry_run_answers_without_charging(tenant: Tenant) -> None:
    tenant.set_limits(max_fanout=100)
    run = new_run(tenant)

    answer = tenant.client.submit_batch(run.name, "root", specs("c", 40), dry_run=True)

    assert (answer.admitted, answer.fanout_used, answer.fanout_limit) == (40, 41, 100)
    assert tenant.client.get_run(run.name).action_count == 1
    with pytest.raises(errors.FanoutLimitExceeded):
        tenant.client.submit_batch(run.name, "root", specs("c", 100), dry_run=True)


def test_concurrent_submitters_never_over_admit(tenant: Tenant, endpoint: str) -> None:
    limit = 101  # the root and 100 children
    tenant.set_limits(max_fanout=limit)
    run = new_run(tenant)
    admitted, rejected = race_submitters([endpoint], tenant.token, run.name)  # each on its own channel

    held = tenant.client.get_run(run.name).action_count
    assert rejected, "the race must have reached the limit"
    assert held == 1 + sum(admitted)
    assert held <= limit
    assert held > limit - 8  # every rejected batch was larger than what was left
    assert tenant.queued() == held


def test_max_queued_rejects_with_a_retry_delay(tenant: Tenant) -> None:
    tenant.set_limits(max_queued=5)
    run = new_run(tenant)  # holds one queued action

    with pytest.raises(errors.QuotaExceeded) as info:
        tenant.client.submit_batch(run.name, "root", specs("c", 5))

    assert info.value.limit_name == "max_queued"
    assert info.value.retry_after == pytest.approx(1.0)
    assert not isinstance(info.value, errors.FanoutLimitExceeded)
    assert tenant.queued() == 1


def test_children_of_an_unknown_parent_are_refused(tenant: Tenant) -> None:
    run = new_run(tenant)

    with pytest.raises(errors.NotFound, match="parent action 'nobody'"):
        tenant.client.submit_batch(run.name, "nobody", specs("c", 1))
    assert tenant.client.get_run(run.name).action_count == 1


def test_a_tenant_reads_its_own_limits_and_usage(tenant: Tenant) -> None:
    tenant.set_limits(max_fanout=77)
    run = new_run(tenant)
    tenant.client.submit_batch(run.name, "root", specs("c", 4))

    quota = tenant.client.get_quota()

    assert (quota.tenant, quota.max_fanout, quota.queued, quota.running) == (tenant.name, 77, 5, 0)
