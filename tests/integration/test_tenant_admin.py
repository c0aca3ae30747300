"""Tenant management and identity: named tokens, the audit trail by actor, temporary limits, deletion,
limits beside usage, limit requests. On a control plane of the module's own with no dispatcher, so
admitted work stays unfinished."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import redis

from fanout.client import Client
from fanout.config import ClientConfig
from fanout.dispatch.dispatcher import Dispatcher
from fanout.quota import keys
from fanout.quota.audit import AuditLog
from fanout.quota.errors import FailedPrecondition
from fanout.quota.limits import LimitStore
from fanout.quota.requests import RequestStore
from fanout.quota.scripts import Scripts
from fanout.server.app import ControlPlane, connect_redis
from fanout.server.redis_process import RedisProcess
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import admin_pb2 as apb
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread, eventually


class NamedAdmin(Client):
    """An admin client that knows its token's name: the actor its changes are audited under."""

    def __init__(self, endpoint: str, token: str, token_name: str) -> None:
        super().__init__(ClientConfig(endpoint=endpoint, token=token))
        self.token_name = token_name


@pytest.fixture
def admin(loop_thread: LoopThread, own_plane: ControlPlane, own_endpoint: str) -> Iterator[NamedAdmin]:
    """An admin client whose token is named, as an operator would mint it."""
    new = loop_thread.run(own_plane.tokens.issue("admin", name=f"alice-{time.monotonic_ns()}", owner="alice"))
    with NamedAdmin(own_endpoint, new.token, new.name) as client:
        yield client


def code(call: Callable[[Any], Any], request: object) -> grpc.StatusCode:
    """The status a raw call ends with (OK when it succeeds)."""
    try:
        call(request)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


def rpc(client: Client, method: str, request: object) -> Any:
    service = client.quota if method in ("RequestLimit", "ListMyLimitRequests", "CheckFanout") else client.admin
    return client.call(getattr(service, method), request)


def raw(client: Client, method: str) -> Callable[[Any], Any]:
    service = client.quota if method in ("RequestLimit", "ListMyLimitRequests", "CheckFanout") else client.admin
    stub = getattr(service, method)
    return lambda request: stub(request, metadata=client._metadata, timeout=10)  # the status as sent, untranslated


def test_tokens_have_a_name_and_owner_and_rotate_or_revoke_by_either(
    admin: NamedAdmin, own_tenant: Tenant, own_endpoint: str
) -> None:
    name = f"ci-{own_tenant.name}"
    made = rpc(
        admin, "CreateToken", apb.CreateTokenRequest(role="tenant", tenant=own_tenant.name, name=name, owner="ci")
    )
    assert made.name == name
    listed = rpc(admin, "ListTokens", apb.ListTokensRequest(tenant=own_tenant.name)).tokens
    assert [(t.name, t.owner, t.role) for t in listed if t.id == made.token_id] == [(name, "ci", "tenant")]
    assert made.token not in str(listed)

    again = raw(admin, "CreateToken")
    assert code(again, apb.CreateTokenRequest(role="tenant", tenant=own_tenant.name, name=name)) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    assert code(again, apb.CreateTokenRequest(role="admin", name="0123456789ab")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(again, apb.CreateTokenRequest(role="admin", name="Has Spaces")) == grpc.StatusCode.INVALID_ARGUMENT

    with Client(ClientConfig(endpoint=own_endpoint, token=made.token)) as old:
        assert old.get_quota().tenant == own_tenant.name
        rotated = rpc(admin, "RotateToken", apb.RotateTokenRequest(name=name))
        assert (rotated.token_id, rotated.name) == (made.token_id, name)
        assert rotated.token != made.token
        assert code(raw(old, "CheckFanout"), apb.CheckFanoutRequest(fanout=1)) == grpc.StatusCode.UNAUTHENTICATED
    with Client(ClientConfig(endpoint=own_endpoint, token=rotated.token)) as new:
        assert new.get_quota().tenant == own_tenant.name
        assert rpc(admin, "RevokeToken", apb.RevokeTokenRequest(name=name)).revoked
        assert code(raw(new, "CheckFanout"), apb.CheckFanoutRequest(fanout=1)) == grpc.StatusCode.UNAUTHENTICATED
    assert not rpc(admin, "RevokeToken", apb.RevokeTokenRequest(name=name)).revoked
    assert code(raw(admin, "RotateToken"), apb.RotateTokenRequest(name=name)) == grpc.StatusCode.NOT_FOUND
    # The name is free again once its token is revoked.
    assert rpc(admin, "CreateToken", apb.CreateTokenRequest(role="tenant", tenant=own_tenant.name, name=name))


def test_the_audit_trail_names_the_acting_token_and_filters_by_actor_tenant_and_time(
    admin: NamedAdmin, own_tenant: Tenant
) -> None:
    before = time.time()
    limits = apb.Limits(max_fanout=77)
    rpc(admin, "SetLimits", apb.SetLimitsRequest(tenant=own_tenant.name, limits=limits, reason="ticket 1"))
    rpc(admin, "CreateToken", apb.CreateTokenRequest(role="dispatcher", name=f"byoc-{own_tenant.name}"))
    name = admin.token_name

    mine = rpc(admin, "ListAudit", apb.ListAuditRequest(actor=name)).entries
    assert [(e.action, e.tenant, e.limit or e.subject) for e in mine] == [
        ("create_token", "", f"byoc-{own_tenant.name}"),
        ("set_limit", own_tenant.name, "max_fanout"),
    ]
    assert all(e.actor == name for e in mine)
    of_tenant = rpc(admin, "ListAudit", apb.ListAuditRequest(tenant=own_tenant.name)).entries
    assert [(e.actor, e.new_value, e.reason) for e in of_tenant] == [(name, 77, "ticket 1")]
    later = rpc(admin, "ListAudit", apb.ListAuditRequest(actor=name, since=time.time() + 1)).entries
    assert list(later) == []
    assert all(e.at >= before for e in mine)


def test_a_temporary_limit_gives_back_the_previous_value_when_it_expires(
    admin: NamedAdmin, own_tenant: Tenant, own_plane: ControlPlane
) -> None:
    tenant = own_tenant.name
    rpc(admin, "SetLimits", apb.SetLimitsRequest(tenant=tenant, limits=apb.Limits(max_fanout=30), reason="base"))
    request = apb.SetLimitsRequest(
        tenant=tenant, limits=apb.Limits(max_fanout=500, max_concurrency=9), reason="event", until=time.time() + 1.5
    )
    shown = rpc(admin, "SetLimits", request)
    assert shown.limits.max_fanout == 500
    assert {(t.limit, t.value, t.restores) for t in shown.temporary} == {
        ("max_fanout", 500, 30),
        ("max_concurrency", 9, 0),  # 0: the server default comes back
    }

    # The servers' periodic loop (reap_interval_seconds 0.5 here) restores them.
    def restored() -> bool:
        got = rpc(admin, "GetLimits", apb.GetLimitsRequest(tenant=tenant))
        return got.limits.max_fanout == 30 and not got.temporary

    eventually(restored, timeout=10)
    limits = rpc(admin, "GetLimits", apb.GetLimitsRequest(tenant=tenant)).limits
    assert limits.max_concurrency == own_plane.limits.defaults.max_concurrency
    trail = rpc(admin, "ListAudit", apb.ListAuditRequest(tenant=tenant)).entries
    expired = [(e.actor, e.limit, e.old_value, e.new_value) for e in trail if e.action == "limit_expired"]
    assert sorted(expired) == [("expiry", "max_concurrency", 9, 0), ("expiry", "max_fanout", 500, 30)]


def test_two_servers_restoring_one_expiry_at_once_apply_it_once(
    loop_thread: LoopThread, own_plane: ControlPlane, own_tenant: Tenant, own_redis_client: redis.Redis
) -> None:
    tenant = own_tenant.name
    limits = own_plane.limits
    loop_thread.run(limits.set(tenant, {"max_fanout": 40}, actor="t", reason="base"))
    loop_thread.run(limits.set(tenant, {"max_fanout": 400}, actor="t", reason="tmp", until=time.time() + 1000))

    async def two_servers_later() -> list[int]:
        later = lambda: time.time() + 2000  # noqa: E731  (a clock past the expiry; the real loop's is not)
        stores = [LimitStore(own_plane.redis, Scripts.register(own_plane.redis), limits.defaults, later) for _ in "ab"]
        return list(await asyncio.gather(*(s.expire_due() for s in stores)))

    assert sum(loop_thread.run(two_servers_later())) == 1
    assert loop_thread.run(limits.effective(tenant)).max_fanout == 40
    trail = [json.loads(e) for e in own_redis_client.lrange(keys.TenantKeys(tenant).audit, 0, -1)]
    assert [e["action"] for e in trail].count("limit_expired") == 1


def test_delete_refuses_while_actions_are_unfinished_unless_forced(
    admin: NamedAdmin, own_tenant: Tenant, own_redis_client: redis.Redis, own_endpoint: str
) -> None:
    tenant = own_tenant.name
    rpc(admin, "SetLimits", apb.SetLimitsRequest(tenant=tenant, limits=apb.Limits(max_fanout=5), reason="audited"))
    own_tenant.client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["true"]))  # stays QUEUED
    asked = rpc(own_tenant.client, "RequestLimit", apb.RequestLimitRequest(limits=apb.Limits(max_fanout=9), reason="r"))
    assert code(raw(admin, "DeleteTenant"), apb.DeleteTenantRequest(tenant=tenant)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert tenant in rpc(admin, "ListTenants", apb.ListTenantsRequest()).tenants
    assert own_tenant.client.get_quota().queued == 1  # nothing changed

    done = rpc(admin, "DeleteTenant", apb.DeleteTenantRequest(tenant=tenant, force=True, reason="offboarded"))
    assert done.tokens_revoked == 1 and done.keys_deleted > 0
    assert tenant not in rpc(admin, "ListTenants", apb.ListTenantsRequest()).tenants
    assert code(raw(admin, "GetTenant"), apb.GetTenantRequest(tenant=tenant)) == grpc.StatusCode.NOT_FOUND
    assert code(raw(own_tenant.client, "CheckFanout"), apb.CheckFanoutRequest(fanout=1)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert own_redis_client.zscore(keys.PENDING_REQUESTS, asked.id) is None
    left = [k.decode() for k in own_redis_client.scan_iter(match=keys.TenantKeys(tenant).every_key)]
    assert left == [keys.TenantKeys(tenant).audit]  # the audit trail outlives the tenant
    platform = rpc(admin, "ListAudit", apb.ListAuditRequest(actor=admin.token_name)).entries
    assert [(e.action, e.subject, e.reason) for e in platform][:1] == [("delete_tenant", tenant, "offboarded (forced)")]


def test_quota_list_pages_every_tenant_and_marks_the_near_ones(
    loop_thread: LoopThread, own_plane: ControlPlane, own_endpoint: str, admin: Client
) -> None:
    busy = make_tenant(loop_thread, own_plane, own_endpoint, prefix="near")
    idle = make_tenant(loop_thread, own_plane, own_endpoint, prefix="idle")
    try:
        busy.set_limits(max_queued=2)
        busy.client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["true"]))
        busy.client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["true"]))
        seen: dict[str, apb.TenantUsage] = {}
        after, pages = "", 0
        while True:
            page = rpc(admin, "ListQuotas", apb.ListQuotasRequest(after=after, limit=2))
            assert len(page.tenants) <= 2
            seen.update({u.tenant: u for u in page.tenants})
            pages += 1
            if not page.next:
                break
            after = page.next
        assert set(rpc(admin, "ListTenants", apb.ListTenantsRequest()).tenants) == set(seen)
        assert pages >= 2
        assert (seen[busy.name].queued, seen[busy.name].limits.max_queued) == (2, 2)
        assert list(seen[busy.name].near) == ["max_queued"]
        assert list(seen[idle.name].near) == []
    finally:
        busy.client.close()
        idle.client.close()


def test_a_request_approved_applies_at_once_and_is_audited_with_both_names(
    admin: NamedAdmin, own_tenant: Tenant, own_plane: ControlPlane
) -> None:
    own_tenant.set_limits(max_fanout=2)
    root = own_tenant.client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["true"]))
    kids = [pb.ActionSpec(name=f"c{i}", task_ref="m:x:y") for i in range(3)]
    with pytest.raises(Exception, match=re.escape("fanout quota request --max-fanout N --reason TEXT")):
        own_tenant.client.submit_batch(root.name, "root", kids)
    check = rpc(own_tenant.client, "CheckFanout", apb.CheckFanoutRequest(fanout=4))
    assert (check.admitted, check.limit, check.max_fanout) == (False, "max_fanout", 2)

    filed = rpc(
        own_tenant.client, "RequestLimit", apb.RequestLimitRequest(limits=apb.Limits(max_fanout=10), reason="x")
    )
    assert filed.state == "pending" and filed.id.startswith(own_tenant.name + ".")
    pending = rpc(admin, "ListLimitRequests", apb.ListLimitRequestsRequest(state="pending")).requests
    assert filed.id in [r.id for r in pending]

    decide = apb.DecideLimitRequestRequest(id=filed.id, reason="ok for the backfill")
    approved = rpc(admin, "ApproveLimitRequest", decide)
    assert (approved.state, approved.decided_by) == ("approved", admin.token_name)
    assert code(raw(admin, "DenyLimitRequest"), decide) == grpc.StatusCode.FAILED_PRECONDITION  # decided once
    every_tenant = rpc(admin, "ListLimitRequests", apb.ListLimitRequestsRequest(state="approved")).requests
    assert filed.id in [r.id for r in every_tenant]
    assert filed.id not in [r.id for r in rpc(admin, "ListLimitRequests", apb.ListLimitRequestsRequest()).requests
                            if r.state == "pending"]  # fmt: skip
    assert own_tenant.client.submit_batch(root.name, "root", kids).admitted == 3
    check = rpc(own_tenant.client, "CheckFanout", apb.CheckFanoutRequest(fanout=4))
    assert (check.admitted, check.headroom) == (True, 6)

    mine = rpc(own_tenant.client, "ListMyLimitRequests", apb.ListLimitRequestsRequest()).requests
    assert [(r.id, r.state, r.decision_reason) for r in mine] == [(filed.id, "approved", "ok for the backfill")]
    trail = rpc(admin, "ListAudit", apb.ListAuditRequest(tenant=own_tenant.name)).entries
    entry = next(e for e in trail if e.action == "approve_request")
    assert (entry.actor, entry.subject, entry.old_value, entry.new_value) == (admin.token_name, filed.id, 2, 10)
    assert "tenant-" in entry.reason and "ok for the backfill" in entry.reason  # the requester's token name


def test_a_forced_delete_of_a_tenant_with_a_running_action_leaves_nothing_behind(
    tenant: Tenant, dispatcher: Dispatcher, admin_client: Client, redis_client: redis.Redis
) -> None:
    """On the session's control plane, whose dispatcher really runs the root: the abort reaches it, and its late
    report or lease renewal recreates none of the tenant's keys."""
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y", command=["sleep", "30"]))
    eventually(lambda: tenant.client.get_action(run.name, "root").phase == pb.RUNNING)
    rpc(admin_client, "DeleteTenant", apb.DeleteTenantRequest(tenant=tenant.name, force=True, reason="gone"))
    pattern = keys.TenantKeys(tenant.name).every_key
    audit = keys.TenantKeys(tenant.name).audit
    deadline = time.monotonic() + 3 * 1.0  # a few of the dispatcher's report and heartbeat rounds
    while time.monotonic() < deadline:
        assert {k.decode() for k in redis_client.scan_iter(match=pattern)} <= {audit}
        time.sleep(0.1)


def test_requests_kept_per_tenant_are_capped_the_oldest_decided_forgotten_first(
    loop_thread: LoopThread, own_plane: ControlPlane, own_tenant: Tenant
) -> None:
    store = RequestStore(own_plane.redis, own_plane.limits)

    async def fill() -> list[str]:
        return [(await store.file(own_tenant.name, "t", {"max_fanout": 5}, "r")).id for _ in range(keys.REQUESTS_MAX)]

    ids = loop_thread.run(fill())
    with pytest.raises(FailedPrecondition, match="pending"):
        loop_thread.run(store.file(own_tenant.name, "t", {"max_fanout": 5}, "one too many"))
    for request_id in ids[:4]:
        loop_thread.run(store.decide(request_id, False, "admin", "no"))
    newest = loop_thread.run(store.file(own_tenant.name, "t", {"max_fanout": 5}, "room again"))
    kept = {r.id: r.state for r in loop_thread.run(store.of_tenant(own_tenant.name))}
    assert newest.id in kept and len(kept) <= keys.REQUESTS_MAX
    assert [i for i in ids[:4] if i in kept] == ids[3:4]  # the older half of the decided ones (3 of 4) went


def test_requests_filed_at_once_on_two_servers_never_pass_the_cap(
    loop_thread: LoopThread,
    own_plane: ControlPlane,
    own_tenant: Tenant,
    own_redis: RedisProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keys, "REQUESTS_MAX", 5)
    second = connect_redis(own_redis.url)  # another server's connection to the same store
    stores = [RequestStore(own_plane.redis, own_plane.limits), RequestStore(second, own_plane.limits)]

    async def file(i: int) -> bool:
        try:
            await stores[i % 2].file(own_tenant.name, "t", {"max_fanout": 5}, f"at once {i}")
            return True
        except FailedPrecondition:
            return False

    async def race() -> list[bool]:
        try:
            return await asyncio.gather(*(file(i) for i in range(40)))
        finally:
            await second.aclose()

    filed = loop_thread.run(race())
    kept = loop_thread.run(stores[0].of_tenant(own_tenant.name))
    assert len(kept) == sum(filed) == 5  # every one past the cap refused, none stored


def test_the_audit_filter_reads_past_pages_of_other_actors_and_stops_at_since(
    loop_thread: LoopThread, own_plane: ControlPlane, own_tenant: Tenant
) -> None:
    now = iter(range(1, 10_000))
    log = AuditLog(own_plane.redis, clock=lambda: float(next(now)))

    async def write() -> None:
        for _ in range(10):
            await log.record(own_tenant.name, "set_limit", "rare")
        for _ in range(2 * 500 + 7):  # more than two pages of someone else's entries, newer
            await log.record(own_tenant.name, "set_limit", "busy")

    loop_thread.run(write(), timeout=60)
    rare = loop_thread.run(log.query(["", own_tenant.name], limit=5, actor="rare"))
    assert [e.at for e in rare] == [10.0, 9.0, 8.0, 7.0, 6.0]
    assert loop_thread.run(log.query([own_tenant.name], limit=50, actor="rare", since=11.0)) == []
    busy = loop_thread.run(log.query([own_tenant.name], limit=3))
    assert [(e.actor, e.at) for e in busy] == [("busy", 1017.0), ("busy", 1016.0), ("busy", 1015.0)]


def test_a_second_temporary_value_keeps_the_first_ones_restore_point_and_its_own_expiry(
    loop_thread: LoopThread, own_plane: ControlPlane, own_tenant: Tenant
) -> None:
    clock = [time.time() + 10_000]  # far past what the real periodic loop sees, so only this store restores
    store = LimitStore(own_plane.redis, Scripts.register(own_plane.redis), own_plane.limits.defaults, lambda: clock[0])
    tenant = own_tenant.name
    loop_thread.run(store.set(tenant, {"max_fanout": 30}, actor="t", reason="base"))
    loop_thread.run(store.set(tenant, {"max_fanout": 100}, actor="t", reason="first", until=clock[0] + 10))
    loop_thread.run(store.set(tenant, {"max_fanout": 200}, actor="t", reason="second", until=clock[0] + 20))

    clock[0] += 15  # the first expiry's time: it was replaced, so nothing comes back yet
    assert loop_thread.run(store.expire_due()) == 0
    assert loop_thread.run(store.effective(tenant)).max_fanout == 200
    clock[0] += 10
    assert loop_thread.run(store.expire_due()) == 1
    assert loop_thread.run(store.effective(tenant)).max_fanout == 30  # the value before any temporary one
    assert loop_thread.run(store.temporary(tenant)) == []
