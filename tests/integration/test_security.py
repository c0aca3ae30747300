"""Authentication, tenant isolation, and bad input: clear statuses, nothing written."""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
import pytest

from fanout.client import Client
from fanout.config import ClientConfig
from fanout.dispatch.dispatcher import Dispatcher
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc, admin_pb2, admin_pb2_grpc
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread, eventually


@pytest.fixture
def stub(endpoint: str) -> Iterator[actions_pb2_grpc.ActionServiceStub]:
    channel = grpc.insecure_channel(endpoint)
    yield actions_pb2_grpc.ActionServiceStub(channel)
    channel.close()


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def test_missing_or_wrong_tokens_are_unauthenticated(stub: actions_pb2_grpc.ActionServiceStub) -> None:
    request = pb.GetRunRequest(run="anything")

    assert code_of(lambda: stub.GetRun(request)) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: stub.GetRun(request, metadata=bearer("fo_t_made-up"))) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: stub.GetRun(request, metadata=bearer("fa2.t.r.a.forged"))) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        code_of(lambda: stub.GetRun(request, metadata=[("authorization", "Basic abc")]))
        == grpc.StatusCode.UNAUTHENTICATED
    )


def test_a_revoked_token_stops_working_at_once(tenant: Tenant, loop_thread: LoopThread, plane: ControlPlane) -> None:
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    loop_thread.run(plane.tokens.revoke(tenant.token))

    with pytest.raises(Exception, match="invalid or revoked token"):
        tenant.client.get_run(run.name)


def test_a_tenant_token_cannot_call_admin_methods(tenant: Tenant, endpoint: str) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(endpoint))

    code = code_of(
        lambda: admin.GetLimits(admin_pb2.GetLimitsRequest(tenant=tenant.name), metadata=bearer(tenant.token))
    )

    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_another_tenants_run_is_not_found(
    tenant: Tenant,
    loop_thread: LoopThread,
    plane: ControlPlane,
    endpoint: str,
    stub: actions_pb2_grpc.ActionServiceStub,
) -> None:
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    other = make_tenant(loop_thread, plane, endpoint, prefix="other")
    theirs = bearer(other.token)

    assert code_of(lambda: stub.GetRun(pb.GetRunRequest(run=run.name), metadata=theirs)) == grpc.StatusCode.NOT_FOUND
    assert (
        code_of(lambda: stub.GetAction(pb.GetActionRequest(run=run.name, name="root"), metadata=theirs))
        == grpc.StatusCode.NOT_FOUND
    )
    watch = stub.WatchChildren(pb.WatchChildrenRequest(run=run.name), metadata=theirs)
    assert code_of(lambda: next(iter(watch))) == grpc.StatusCode.NOT_FOUND
    assert (
        code_of(
            lambda: stub.SubmitBatch(
                pb.SubmitBatchRequest(run=run.name, parent="root", actions=[pb.ActionSpec(name="x", task_ref="m:a:b")]),
                metadata=theirs,
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    assert tenant.client.get_run(run.name).action_count == 1


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.SubmitBatchRequest(run="Bad Run!", parent="root"), "run name"),
        (pb.SubmitBatchRequest(run="r1", parent="has space"), "parent name"),
        (pb.SubmitBatchRequest(run="r1", parent="root"), "batch is empty"),
        (
            pb.SubmitBatchRequest(run="r1", parent="root", actions=[pb.ActionSpec(name="a/b", task_ref="m:x:y")]),
            "action name",
        ),
        (pb.SubmitBatchRequest(run="r1", parent="root", actions=[pb.ActionSpec(name="a")]), "neither a task_ref"),
        (
            pb.SubmitBatchRequest(
                run="r1", parent="root", actions=[pb.ActionSpec(name="a", task_ref="m:x:y", inputs=b"x" * 2000)]
            ),
            "inputs are 2000 bytes, max_payload_bytes is 1000",
        ),
        (
            pb.SubmitBatchRequest(
                run="r1",
                parent="root",
                actions=[pb.ActionSpec(name="a", task_ref="m:x:y", env={f"K{i}": "v" for i in range(65)})],
            ),
            "65 environment variables",
        ),
    ],
)
def test_malformed_requests_are_invalid_and_change_nothing(
    tenant: Tenant, stub: actions_pb2_grpc.ActionServiceStub, request_: pb.SubmitBatchRequest, message: str
) -> None:
    tenant.set_limits(max_payload_bytes=1000)
    # A root that keeps running: one that ended (leases are pushed, so a dispatcher may take
    # and fail it at once) would end the run, which then refuses new actions.
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y", command=["sleep", "30"]), run_name="r1")

    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitBatch(request_, metadata=bearer(tenant.token))

    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")
    assert tenant.client.get_run(run.name).action_count == 1
    assert tenant.queued() == 1
    # ...and the server keeps serving.
    assert tenant.client.submit_batch("r1", "root", [pb.ActionSpec(name="ok", task_ref="m:x:y")]).admitted == 1
    tenant.client.abort_run(run.name)


def test_an_action_token_reaches_only_its_own_run_and_children(
    tenant: Tenant, loop_thread: LoopThread, plane: ControlPlane, endpoint: str, dispatcher: Dispatcher
) -> None:
    # Action tokens live as long as their attempt, so the root must really be running.
    mine = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y", command=["sleep", "30"]))
    other = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    root = eventually(lambda: (a := tenant.client.get_action(mine.name, "root")).phase == pb.RUNNING and a)
    token = plane.tokens.mint_action_token(tenant.name, mine.name, "root", root.attempt)
    child = [pb.ActionSpec(name="c", task_ref="m:x:y")]

    with Client(ClientConfig(endpoint=endpoint, token=token)) as action:
        assert action.submit_batch(mine.name, "root", child).admitted == 1
        with pytest.raises(Exception, match="only its own children"):
            action.submit_batch(mine.name, "c", child)
        with pytest.raises(Exception, match="not found"):
            action.get_run(other.name)
        with pytest.raises(Exception, match="may not call"):
            action.create_run(pb.ActionSpec(task_ref="module:x:y"))
    tenant.client.abort_run(mine.name)


def test_admin_limit_changes_are_audited(admin_client: Client, tenant: Tenant) -> None:
    admin_client.set_limits(tenant.name, "bigger run", max_fanout=500)
    admin_client.set_limits(tenant.name, "too big", max_fanout=200)

    limits = admin_client.get_limits(tenant.name)
    audit = admin_client.audit(tenant.name)

    assert limits.limits.max_fanout == 200
    assert limits.overrides.max_fanout == 200
    assert limits.overrides.max_concurrency == 0
    assert [(e.limit, e.old_value, e.new_value, e.reason) for e in audit] == [
        ("max_fanout", 500, 200, "too big"),
        ("max_fanout", 10_000, 500, "bigger run"),
    ]
    assert re.fullmatch(r"admin-[0-9a-f]{12}", audit[0].actor)  # the acting token's name (unnamed: role-id)
    with pytest.raises(Exception, match="must be between 1 and"):
        admin_client.set_limits(tenant.name, "oops", max_fanout=10**9)
    assert admin_client.get_limits(tenant.name).limits.max_fanout == 200
