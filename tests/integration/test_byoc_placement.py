"""BYOC placement: only dispatchers scoped to a BYOC tenant lease its actions.

A private Redis and server (no session dispatcher takes the work), real lease streams over gRPC: an
unscoped (platform) dispatcher's stream and one scoped to the BYOC tenant. The placement is set
through AdminService.SetPlacement with an admin token, as `fanout admin tenant set` does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from fanout.server.app import ControlPlane, create_server
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import admin_pb2 as apb
from fanout.v1 import admin_pb2_grpc
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread
from tests.integration.test_pushed_leases import LeaseStream

LEASED_WITHIN = 5.0
# Longer than two of the lease streams' safety sweeps (dispatch_service.SWEEP_SECONDS): a BYOC
# action an unscoped stream would lease, it would have leased by then.
NOT_LEASED_FOR = 5.0


@pytest.fixture
def private_plane(
    loop_thread: LoopThread, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    store = RedisProcess(tmp_path_factory.mktemp("byoc-redis")).start()
    plane = loop_thread.run(create_server(replace(settings, redis_url=store.url)))
    yield plane
    loop_thread.run(plane.stop(grace=1))
    store.stop()


class Admin:
    """AdminService calls with an admin token named placement-admin (the actor in the audit trail)."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self.stub = admin_pb2_grpc.AdminServiceStub(channel)
        self.metadata = [("authorization", f"Bearer {token}")]

    def set_placement(self, request: apb.SetPlacementRequest) -> apb.TenantPlacement:
        reply: apb.TenantPlacement = self.stub.SetPlacement(request, metadata=self.metadata, timeout=10)
        return reply

    def usage(self, tenant: str) -> apb.TenantUsage:
        reply: apb.TenantUsage = self.stub.GetTenant(
            apb.GetTenantRequest(tenant=tenant), metadata=self.metadata, timeout=10
        )
        return reply

    def placement_audit(self, tenant: str) -> list[apb.AuditEntry]:
        trail = self.stub.ListAudit(apb.ListAuditRequest(tenant=tenant), metadata=self.metadata, timeout=10)
        return [e for e in trail.entries if e.action == "set_placement"]


@pytest.fixture
def admin(loop_thread: LoopThread, private_plane: ControlPlane) -> Iterator[Admin]:
    token = loop_thread.run(private_plane.tokens.issue("admin", name="placement-admin")).token
    channel = grpc.insecure_channel(f"127.0.0.1:{private_plane.port}")
    yield Admin(channel, token)
    channel.close()


@pytest.fixture
def streams() -> Iterator[list[LeaseStream]]:
    opened: list[LeaseStream] = []
    yield opened
    for stream in opened:
        stream.close()


def tenant_on(loop_thread: LoopThread, plane: ControlPlane, prefix: str) -> Tenant:
    return make_tenant(loop_thread, plane, f"127.0.0.1:{plane.port}", prefix=prefix)


def set_placement(admin: Admin, tenant: str, placement: str) -> apb.TenantPlacement:
    return admin.set_placement(apb.SetPlacementRequest(tenant=tenant, placement=placement, reason=f"to {placement}"))


def stream_for(loop_thread: LoopThread, plane: ControlPlane, streams: list[LeaseStream], scope: str) -> LeaseStream:
    stream = LeaseStream(plane, loop_thread.run(plane.tokens.create("dispatcher", scope)), capacity=8)
    streams.append(stream)
    return stream


def leased_runs(stream: LeaseStream, seconds: float) -> set[str]:
    """The runs of every action the stream is given within `seconds`."""
    deadline, runs = time.monotonic() + seconds, set()
    while (left := deadline - time.monotonic()) > 0:
        try:
            runs.add(stream.next_action(left).run)
        except AssertionError:
            break
    return runs


def test_an_unscoped_dispatcher_never_leases_a_byoc_tenants_action_while_a_scoped_one_does(
    loop_thread: LoopThread,
    private_plane: ControlPlane,
    admin: Admin,
    streams: list[LeaseStream],
) -> None:
    byoc = tenant_on(loop_thread, private_plane, "byoc")
    hosted = tenant_on(loop_thread, private_plane, "hosted")
    assert set_placement(admin, byoc.name, "byoc").placement == "byoc"
    platform = stream_for(loop_thread, private_plane, streams, "")

    own_run = byoc.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    hosted_run = hosted.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    # The platform's dispatcher still serves serverless tenants, and never the BYOC one, sweeps included.
    assert leased_runs(platform, NOT_LEASED_FOR) == {hosted_run.name}

    own = stream_for(loop_thread, private_plane, streams, byoc.name)
    assert own.next_action(LEASED_WITHIN).run == own_run.name

    # Back to serverless: the platform's dispatcher takes the tenant's next action at once.
    own.close()
    streams.remove(own)
    assert set_placement(admin, byoc.name, "serverless").placement == "serverless"
    next_run = byoc.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    assert next_run.name in leased_runs(platform, LEASED_WITHIN)  # beside the hosted action, requeued unrenewed


def test_a_placement_change_is_audited_and_shown(
    loop_thread: LoopThread, private_plane: ControlPlane, admin: Admin
) -> None:
    t = tenant_on(loop_thread, private_plane, "audited")
    set_placement(admin, t.name, "byoc")

    usage, entries = admin.usage(t.name), admin.placement_audit(t.name)

    assert usage.placement == "byoc"
    [entry] = entries
    assert (entry.actor, entry.limit, entry.reason) == ("placement-admin", "placement", "to byoc")
    assert (entry.old_value, entry.new_value, entry.subject) == (0, 1, "serverless -> byoc")


@pytest.mark.parametrize(
    ("placement", "reason", "tenant", "code"),
    [
        ("cloud", "r", None, grpc.StatusCode.INVALID_ARGUMENT),
        ("byoc", "", None, grpc.StatusCode.INVALID_ARGUMENT),
        ("byoc", "r" * 5000, None, grpc.StatusCode.INVALID_ARGUMENT),
        ("byoc", "r", "no-such-tenant", grpc.StatusCode.NOT_FOUND),
    ],
)
def test_a_bad_placement_request_is_refused_and_changes_nothing(
    loop_thread: LoopThread,
    private_plane: ControlPlane,
    admin: Admin,
    placement: str,
    reason: str,
    tenant: str | None,
    code: grpc.StatusCode,
) -> None:
    t = tenant_on(loop_thread, private_plane, "bad")
    request = apb.SetPlacementRequest(tenant=tenant or t.name, placement=placement, reason=reason)
    with pytest.raises(grpc.RpcError) as refused:
        admin.set_placement(request)

    assert refused.value.code() == code
    usage, entries = admin.usage(t.name), admin.placement_audit(t.name)
    assert usage.placement == "serverless"
    assert not entries
