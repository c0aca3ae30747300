"""Who may call what: every RPC the server serves against every role, with the status expected.

Roles: admin; tenant; another tenant; dispatcher scoped to the tenant and unscoped; the action token of
a running action of this run and of another run. A foreign object answers NOT_FOUND exactly like a
missing one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from fanout.dispatch.dispatcher import Dispatcher
from fanout.server.app import ControlPlane
from fanout.server.auth import METHOD_ROLES, PER_MESSAGE_TOKENS
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc, admin_pb2_grpc, dispatch_pb2_grpc
from fanout.v1 import admin_pb2 as apb
from fanout.v1 import bundles_pb2 as bpb
from fanout.v1 import dispatch_pb2 as dpb
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread, eventually

OK, DENIED, NOT_FOUND = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND
ROLES = (
    "admin",
    "tenant",
    "other_tenant",
    "dispatcher_scoped",
    "dispatcher_all",
    "action_this_run",
    "action_other_run",
)
TENANT_RPCS = ("RequestLimit", "ListMyLimitRequests", "CheckFanout")


def admin_only(admin: grpc.StatusCode = OK) -> dict[str, grpc.StatusCode]:
    return {role: admin if role == "admin" else DENIED for role in ROLES}


def tenants_only() -> dict[str, grpc.StatusCode]:
    return {role: OK if role in ("tenant", "other_tenant") else DENIED for role in ROLES}


class World:
    """The tokens of every role, over one tenant with two running runs."""

    def __init__(self, loop: LoopThread, plane: ControlPlane, endpoint: str, tenant: Tenant, other: Tenant) -> None:
        spec = pb.ActionSpec(task_ref="module:x:y", command=["sleep", "30"])
        self.runs = [tenant.client.create_run(spec).name for _ in range(2)]
        attempts = [self._running_attempt(tenant, run) for run in self.runs]
        self.tenant = tenant
        self.channel = grpc.insecure_channel(endpoint)
        self.tokens = {
            "admin": loop.run(plane.tokens.create("admin")),
            "tenant": tenant.token,
            "other_tenant": other.token,
            "dispatcher_scoped": loop.run(plane.tokens.create("dispatcher", tenant.name)),
            "dispatcher_all": loop.run(plane.tokens.create("dispatcher")),
            "action_this_run": plane.tokens.mint_action_token(tenant.name, self.runs[0], "root", attempts[0]),
            "action_other_run": plane.tokens.mint_action_token(tenant.name, self.runs[1], "root", attempts[1]),
        }
        # A throwaway token for RotateToken, so the admin's rotation changes no token the matrix uses.
        self.rotatable = loop.run(plane.tokens.issue("tenant", tenant.name, name=f"rot-{tenant.name}")).name

    @staticmethod
    def _running_attempt(tenant: Tenant, run: str) -> int:
        """Action tokens live as long as their attempt, so the root must really be running."""
        root = eventually(lambda: (a := tenant.client.get_action(run, "root")).phase == pb.RUNNING and a)
        return root.attempt

    def call(self, role: str, method: str, request: Any) -> grpc.StatusCode:
        service = admin_pb2_grpc.QuotaServiceStub if method in TENANT_RPCS else admin_pb2_grpc.AdminServiceStub
        try:
            getattr(service(self.channel), method)(
                request, metadata=[("authorization", f"Bearer {self.tokens[role]}")], timeout=10
            )
            return OK
        except grpc.RpcError as exc:
            return exc.code()


@pytest.fixture
def world(
    loop_thread: LoopThread, plane: ControlPlane, endpoint: str, tenant: Tenant, dispatcher: Dispatcher
) -> Iterator[World]:
    other = make_tenant(loop_thread, plane, endpoint, prefix="other")
    w = World(loop_thread, plane, endpoint, tenant, other)
    yield w
    for run in w.runs:
        tenant.client.abort_run(run)
    w.channel.close()
    other.client.close()


def cases(t: str, rotatable: str) -> dict[str, tuple[Any, dict[str, grpc.StatusCode]]]:
    limits = apb.Limits(max_fanout=9)
    return {
        "CreateTenant": (apb.CreateTenantRequest(tenant=f"{t}-new"), admin_only()),
        "CreateToken": (apb.CreateTokenRequest(role="dispatcher", tenant=t), admin_only()),
        "RevokeToken": (apb.RevokeTokenRequest(name="no-such-token"), admin_only()),
        "RotateToken": (apb.RotateTokenRequest(name=rotatable), admin_only()),
        "ListTokens": (apb.ListTokensRequest(tenant=t), admin_only()),
        "SetLimits": (apb.SetLimitsRequest(tenant=t, limits=limits, reason="matrix"), admin_only()),
        "GetLimits": (apb.GetLimitsRequest(tenant=t), admin_only()),
        "ListAudit": (apb.ListAuditRequest(tenant=t), admin_only()),
        "ListTenants": (apb.ListTenantsRequest(), admin_only()),
        "GetTenant": (apb.GetTenantRequest(tenant=t), admin_only()),
        # Its actions are running: refused without --force.
        "DeleteTenant": (apb.DeleteTenantRequest(tenant=t), admin_only(grpc.StatusCode.FAILED_PRECONDITION)),
        "ListQuotas": (apb.ListQuotasRequest(limit=10), admin_only()),
        "ListLimitRequests": (apb.ListLimitRequestsRequest(tenant=t), admin_only()),
        "ApproveLimitRequest": (apb.DecideLimitRequestRequest(id=f"{t}.00000000", reason="r"), admin_only(NOT_FOUND)),
        "DenyLimitRequest": (apb.DecideLimitRequestRequest(id=f"{t}.00000000", reason="r"), admin_only(NOT_FOUND)),
        # Serverless, as it was: the session's unscoped dispatcher keeps running the tenant's work.
        "SetPlacement": (apb.SetPlacementRequest(tenant=t, placement="serverless", reason="matrix"), admin_only()),
        "RequestLimit": (apb.RequestLimitRequest(limits=limits, reason="matrix"), tenants_only()),
        "ListMyLimitRequests": (apb.ListLimitRequestsRequest(tenant=t), tenants_only()),
        "CheckFanout": (apb.CheckFanoutRequest(fanout=3), tenants_only()),
    }


def test_every_admin_and_quota_request_rpc_against_every_role(world: World) -> None:
    table = cases(world.tenant.name, world.rotatable)
    covered = {
        m.rsplit("/", 1)[1]
        for m in METHOD_ROLES
        if m.startswith(("/fanout.v1.AdminService/", "/fanout.v1.QuotaService/"))
    }
    assert covered == set(table), "every AdminService and QuotaService RPC is in the matrix"
    got = {
        (method, role): world.call(role, method, request) for method, (request, _) in table.items() for role in ROLES
    }
    want = {(method, role): status for method, (_, by_role) in table.items() for role, status in by_role.items()}
    assert got == want


def test_abort_action_against_every_role(world: World) -> None:
    run = world.runs[0]
    world.tenant.client.submit_batch(
        run, "root", [pb.ActionSpec(name="kid", task_ref="module:x:y", command=["sleep", "30"])]
    )

    def abort(role: str, name: str) -> grpc.StatusCode:
        try:
            actions_pb2_grpc.ActionServiceStub(world.channel).AbortAction(
                pb.AbortActionRequest(run=run, names=[name]),
                metadata=[("authorization", f"Bearer {world.tokens[role]}")],
                timeout=10,
            )
            return OK
        except grpc.RpcError as exc:
            return exc.code()

    # Refused: no role for it, another tenant's run, another run's action token, an action that is not its child.
    refused = {role: abort(role, "kid") for role in ROLES if role not in ("tenant", "action_this_run")}
    assert refused == {
        "admin": DENIED,
        "other_tenant": NOT_FOUND,
        "dispatcher_scoped": DENIED,
        "dispatcher_all": DENIED,
        "action_other_run": NOT_FOUND,
    }
    assert abort("action_this_run", "root") == DENIED
    assert abort("tenant", "no-such-kid") == NOT_FOUND
    assert world.tenant.client.get_action(run, "kid").phase != pb.ABORTED  # none of those changed anything
    # The running root's own token aborts its child; the tenant may abort any action of its runs.
    assert abort("action_this_run", "kid") == OK
    assert world.tenant.client.get_action(run, "kid").phase == pb.ABORTED
    assert abort("tenant", "kid") == OK  # already finished: nothing to do, not an error
    assert world.tenant.client.get_action(run, "root").phase == pb.RUNNING


def test_foreign_objects_are_not_found_exactly_like_missing_ones(world: World) -> None:
    t = world.tenant.name
    filed = admin_pb2_grpc.QuotaServiceStub(world.channel).RequestLimit(
        apb.RequestLimitRequest(limits=apb.Limits(max_fanout=9), reason="mine"),
        metadata=[("authorization", f"Bearer {world.tokens['tenant']}")],
        timeout=10,
    )
    # The other tenant asking for the first one's requests by name sees only its own (none).
    stub = admin_pb2_grpc.QuotaServiceStub(world.channel)
    theirs = stub.ListMyLimitRequests(
        apb.ListLimitRequestsRequest(tenant=t), metadata=[("authorization", f"Bearer {world.tokens['other_tenant']}")]
    )
    assert list(theirs.requests) == []
    mine = stub.ListMyLimitRequests(
        apb.ListLimitRequestsRequest(), metadata=[("authorization", f"Bearer {world.tokens['tenant']}")]
    )
    assert [r.id for r in mine.requests] == [filed.id]
    # For admins a missing tenant or request is NOT_FOUND, whatever its shape.
    for method, request in {
        "GetTenant": apb.GetTenantRequest(tenant=f"{t}-gone"),
        "GetLimits": apb.GetLimitsRequest(tenant=f"{t}-gone"),
        "DeleteTenant": apb.DeleteTenantRequest(tenant=f"{t}-gone"),
        "ApproveLimitRequest": apb.DecideLimitRequestRequest(id="nosuchtenant.1234abcd", reason="r"),
        "DenyLimitRequest": apb.DecideLimitRequestRequest(id="NOT A TENANT.x", reason="r"),
        "RotateToken": apb.RotateTokenRequest(token_id="0123456789ab"),
    }.items():
        assert world.call("admin", method, request) == NOT_FOUND, method


def test_run_listing_rpcs_against_every_role(world: World) -> None:
    """ListRuns: tenants only, each its own runs. ListActions: the tenant, and an action token for its own run."""
    run = world.runs[0]
    stub = actions_pb2_grpc.ActionServiceStub(world.channel)
    requests: dict[str, Any] = {"ListRuns": pb.ListRunsRequest(), "ListActions": pb.ListActionsRequest(run=run)}
    want = {
        "ListRuns": tenants_only(),
        "ListActions": {
            **{role: DENIED for role in ROLES},
            "tenant": OK,
            "other_tenant": NOT_FOUND,  # exactly like a missing run
            "action_this_run": OK,
            "action_other_run": NOT_FOUND,
        },
    }
    assert {m.rsplit("/", 1)[1] for m in METHOD_ROLES if m.endswith(("/ListRuns", "/ListActions"))} == set(want)
    got: dict[str, dict[str, grpc.StatusCode]] = {method: {} for method in requests}
    replies: dict[tuple[str, str], Any] = {}
    for method, request in requests.items():
        for role in ROLES:
            try:
                replies[method, role] = getattr(stub, method)(
                    request, metadata=[("authorization", f"Bearer {world.tokens[role]}")], timeout=10
                )
                got[method][role] = OK
            except grpc.RpcError as exc:
                got[method][role] = exc.code()
    assert got == want
    # What each may see: the tenant its runs, the other tenant none of them.
    assert set(world.runs) <= {r.name for r in replies["ListRuns", "tenant"].runs}
    assert not {r.name for r in replies["ListRuns", "other_tenant"].runs} & set(world.runs)
    assert [a.name for a in replies["ListActions", "tenant"].actions] == ["root"]
    missing = pb.ListActionsRequest(run="no-such-run")
    with pytest.raises(grpc.RpcError) as missing_run:
        stub.ListActions(missing, metadata=[("authorization", f"Bearer {world.tokens['tenant']}")], timeout=10)
    assert missing_run.value.code() == NOT_FOUND


# An action's own records: (the write, its request, the read, its request, what the read gives back).
OWN_RECORDS = {
    "traces": (
        "RecordTraces",
        lambda run, action: pb.RecordTracesRequest(
            run=run, action=action, records=[pb.TraceRecord(key="matrix", name="f", output=b"1")]
        ),
        "ListTraces",
        lambda run: pb.ListTracesRequest(run=run, action="root"),
        lambda reply: [r.key for r in reply.records] == ["matrix"],
    ),
    "report": (
        "PutReport",
        lambda run, action: pb.PutReportRequest(run=run, action=action, html=b"<p>matrix</p>"),
        "GetReport",
        lambda run: pb.GetReportRequest(run=run, action="root"),
        lambda reply: reply.html == b"<p>matrix</p>",
    ),
}


@pytest.mark.parametrize("kind", sorted(OWN_RECORDS))
def test_own_record_rpcs_against_every_role(world: World, kind: str) -> None:
    """Traced calls and reports: written only by the running action itself, read by its tenant and its run."""
    write, write_request, read, read_request, holds_it = OWN_RECORDS[kind]
    run = world.runs[0]
    stub = actions_pb2_grpc.ActionServiceStub(world.channel)
    readers = {
        **{role: DENIED for role in ROLES},
        "tenant": OK,
        "other_tenant": NOT_FOUND,  # exactly like a missing run
        "action_this_run": OK,
        "action_other_run": NOT_FOUND,
    }
    want = {
        write: {**{role: DENIED for role in ROLES}, "action_this_run": OK, "action_other_run": NOT_FOUND},
        read: readers,
    }
    assert {m.rsplit("/", 1)[1] for m in METHOD_ROLES if m.endswith((f"/{write}", f"/{read}"))} == set(want)
    requests = {write: write_request(run, "root"), read: read_request(run)}
    got = {
        method: {role: _code(getattr(stub, method), request, world.tokens[role]) for role in ROLES}
        for method, request in requests.items()
    }
    assert got == want
    # Only the action's own write is there, whoever tried.
    reply = getattr(stub, read)(requests[read], metadata=[("authorization", f"Bearer {world.tokens['tenant']}")])
    assert holds_it(reply)
    # The run's own action token, for another action of the run: refused.
    assert _code(getattr(stub, write), write_request(run, "matrix-kid"), world.tokens["action_this_run"]) == DENIED


def _code(method: Any, request: Any, token: str) -> grpc.StatusCode:
    try:
        method(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)
        return OK
    except grpc.RpcError as exc:
        return exc.code()


def run_and_dispatch_cases(
    world: World, victim: str
) -> dict[str, tuple[Callable[[Any, list[Any]], Any], dict[str, grpc.StatusCode]]]:
    """One row per ActionService and DispatchService RPC whose caller is known from its metadata token."""
    run = world.runs[0]
    kid = pb.ActionSpec(name="matrix-kid", task_ref="module:x:y", command=["sleep", "30"])
    run_readers = {  # the tenant, and the action token of this run; a foreign run is NOT_FOUND like a missing one
        **{role: DENIED for role in ROLES},
        "tenant": OK,
        "other_tenant": NOT_FOUND,
        "action_this_run": OK,
        "action_other_run": NOT_FOUND,
    }
    tenant_run = {**{role: DENIED for role in ROLES}, "tenant": OK, "other_tenant": NOT_FOUND}
    dispatchers = {role: OK if role.startswith("dispatcher") else DENIED for role in ROLES}

    def first_event(stub: Any, md: list[Any]) -> Any:
        stream = stub.WatchChildren(pb.WatchChildrenRequest(run=run), metadata=md, timeout=10)
        next(stream)  # the first replayed event: the call was let in
        stream.cancel()

    def lease(stub: Any, md: list[Any]) -> Any:
        # No capacity: a dispatcher let in leases nothing, and its stream stays open until it goes.
        hello = dpb.LeaseRequest(hello=dpb.Hello(dispatcher_id="matrix", capacity=0))
        stream = stub.Lease(iter([hello]), metadata=md, timeout=1)
        try:
            for _ in stream:
                pass
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise

    return {
        "CreateRun": (
            lambda s, md: s.CreateRun(
                pb.CreateRunRequest(root=pb.ActionSpec(task_ref="module:x:y", command=["true"])),
                metadata=md,
                timeout=10,
            ),
            {**tenants_only()},
        ),
        "SubmitBatch": (
            lambda s, md: s.SubmitBatch(pb.SubmitBatchRequest(run=run, parent="root", actions=[kid]), metadata=md),
            run_readers,
        ),
        "WatchChildren": (first_event, run_readers),
        "GetRun": (lambda s, md: s.GetRun(pb.GetRunRequest(run=run), metadata=md, timeout=10), run_readers),
        "GetAction": (
            lambda s, md: s.GetAction(pb.GetActionRequest(run=run, name="root"), metadata=md, timeout=10),
            run_readers,
        ),
        "GetQuota": (lambda s, md: s.GetQuota(pb.GetQuotaRequest(), metadata=md, timeout=10), tenants_only()),
        "GetLogs": (
            lambda s, md: s.GetLogs(pb.GetLogsRequest(run=run, name="root"), metadata=md, timeout=10),
            run_readers,
        ),
        "AbortRun": (lambda s, md: s.AbortRun(pb.AbortRunRequest(run=victim), metadata=md, timeout=10), tenant_run),
        "Lease": (lease, dispatchers),
        "Report": (lambda s, md: s.Report(dpb.ReportRequest(), metadata=md, timeout=10), dispatchers),
    }


def test_run_and_dispatch_rpcs_against_every_role(world: World) -> None:
    victim = world.tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y", command=["sleep", "30"])).name
    world.runs.append(victim)  # aborted at teardown whatever happens here
    table = run_and_dispatch_cases(world, victim)
    stubs = {
        "Lease": dispatch_pb2_grpc.DispatchServiceStub(world.channel),
        "Report": dispatch_pb2_grpc.DispatchServiceStub(world.channel),
    }
    got: dict[tuple[str, str], grpc.StatusCode] = {}
    for method, (call, _) in table.items():
        stub = stubs.get(method) or actions_pb2_grpc.ActionServiceStub(world.channel)
        for role in ROLES:
            try:
                call(stub, [("authorization", f"Bearer {world.tokens[role]}")])
                got[method, role] = OK
            except grpc.RpcError as exc:
                got[method, role] = exc.code()
    want = {(method, role): status for method, (_, by_role) in table.items() for role, status in by_role.items()}
    assert got == want


# RPCs whose rows live elsewhere: BundleService's matrix (test_bundle_service.py checks it covers its
# service), and the two calls that carry a token per message, checked message by message
# (test_worker_multiplexing.py), not by a metadata token.
ELSEWHERE = {"HasBundle", "UploadBundle", "GetBundle", "SubmitMany", "WatchMany"}
IN_THIS_FILE = {"AbortAction", "ListRuns", "ListActions", "RecordTraces", "ListTraces", "PutReport", "GetReport"}


def test_every_rpc_served_has_a_row_in_a_role_matrix(world: World) -> None:
    """A new RPC without a row fails here: the services are read from the protos, not from a list."""
    served = {
        method.name
        for module in (pb, apb, dpb, bpb)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    rows = set(cases(world.tenant.name, world.rotatable)) | set(run_and_dispatch_cases(world, "x"))
    assert served - rows - IN_THIS_FILE - ELSEWHERE == set()
    assert {m.rsplit("/", 1)[1] for m in PER_MESSAGE_TOKENS} <= ELSEWHERE
