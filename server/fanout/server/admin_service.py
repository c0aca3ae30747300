"""fanout.v1.AdminService: tenants, tokens, limits, limit requests and the audit trail.

Every change is audited under the acting token's name.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc import aio

from fanout.quota.actions import ActionStore
from fanout.quota.audit import AuditEntry, AuditLog
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.requests import STATES, LimitRequest, RequestStore
from fanout.quota.tenants import TenantStore, TenantUsage
from fanout.quota.tokens import TOKEN_ID_RE, TokenStore
from fanout.server import validation
from fanout.server.auth import principal
from fanout.server.status import ServiceError, invalid, not_found
from fanout.v1 import admin_pb2 as apb
from fanout.v1 import admin_pb2_grpc

PAGE_MAX = 1000


def limits_proto(values: Limits | dict[str, int]) -> apb.Limits:
    if isinstance(values, Limits):
        return apb.Limits(**{name: getattr(values, name) for name in Limits.names()})
    return apb.Limits(**values)


def limit_changes(limits: apb.Limits) -> dict[str, int]:
    return {name: getattr(limits, name) for name in Limits.names() if getattr(limits, name)}


def request_proto(r: LimitRequest) -> apb.LimitRequest:
    return apb.LimitRequest(
        id=r.id,
        tenant=r.tenant,
        requester=r.requester,
        limits=limits_proto(r.limits),
        reason=r.reason,
        state=r.state,
        created_at=r.created_at,
        decided_by=r.decided_by,
        decided_at=r.decided_at,
        decision_reason=r.decision_reason,
    )


def usage_proto(u: TenantUsage) -> apb.TenantUsage:
    return apb.TenantUsage(
        tenant=u.tenant,
        limits=limits_proto(u.limits),
        running=u.running,
        queued=u.queued,
        stored_bytes=u.stored_bytes,
        near=u.near,
        placement=u.placement,
    )


def _audit_proto(e: AuditEntry) -> apb.AuditEntry:
    return apb.AuditEntry(
        at=e.at,
        actor=e.actor,
        tenant=e.tenant,
        limit=e.limit,
        old_value=max(0, e.old),
        new_value=max(0, e.new),
        reason=e.reason,
        action=e.action,
        subject=e.subject,
    )


def check_state(state: str) -> None:
    if state and state not in STATES:
        raise invalid(f"state must be one of {', '.join(STATES)}, not {state!r}")


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        store: ActionStore,
        limits: LimitStore,
        tokens: TokenStore,
        tenants: TenantStore,
        requests: RequestStore,
        audit: AuditLog,
    ) -> None:
        self._store = store
        self._limits = limits
        self._tokens = tokens
        self._tenants = tenants
        self._requests = requests
        self._audit = audit

    # Tenants ----------------------------------------------------------------

    async def CreateTenant(
        self, request: apb.CreateTenantRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.CreateTenantResponse:
        tenant = validation.tenant_name(request.tenant)
        if not await self._store.register_tenant(tenant):
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS, f"tenant {tenant!r} exists; use CreateToken for another token"
            )
        new = await self._tokens.issue("tenant", tenant)
        await self._audit.record(tenant, "create_tenant", principal().actor)
        await self._audit.record(tenant, "create_token", principal().actor, subject=new.name)
        return apb.CreateTenantResponse(tenant=tenant, token=new.token, token_id=new.id)

    async def ListTenants(
        self, request: apb.ListTenantsRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.ListTenantsResponse:
        return apb.ListTenantsResponse(tenants=await self._tenants.names())

    async def GetTenant(self, request: apb.GetTenantRequest, context: aio.ServicerContext[Any, Any]) -> apb.TenantUsage:
        await self._require_tenant(request.tenant)
        return usage_proto((await self._tenants.usage([request.tenant]))[0])

    async def SetPlacement(
        self, request: apb.SetPlacementRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.TenantPlacement:
        await self._require_tenant(request.tenant)
        placement = await self._tenants.placement.set(
            request.tenant, request.placement, principal().actor, request.reason
        )
        return apb.TenantPlacement(tenant=request.tenant, placement=placement)

    async def DeleteTenant(
        self, request: apb.DeleteTenantRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.DeleteTenantResponse:
        validation.tenant_name(request.tenant)
        revoked, deleted = await self._tenants.delete(request.tenant, request.force)
        reason = request.reason + (" (forced)" if request.force else "")
        await self._audit.record("", "delete_tenant", principal().actor, subject=request.tenant, reason=reason)
        return apb.DeleteTenantResponse(tokens_revoked=revoked, keys_deleted=deleted)

    async def ListQuotas(
        self, request: apb.ListQuotasRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.ListQuotasResponse:
        if request.after:
            validation.tenant_name(request.after)
        names, after = await self._tenants.page(request.after, min(request.limit or PAGE_MAX, PAGE_MAX))
        return apb.ListQuotasResponse(tenants=[usage_proto(u) for u in await self._tenants.usage(names)], next=after)

    # Tokens -----------------------------------------------------------------

    async def CreateToken(
        self, request: apb.CreateTokenRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.CreateTokenResponse:
        if request.role not in ("tenant", "admin", "dispatcher"):
            raise invalid(f"role must be tenant, admin or dispatcher, not {request.role!r}")
        if request.role == "tenant" and not request.tenant:
            raise invalid("a tenant token needs a tenant")
        if request.role == "admin" and request.tenant:
            raise invalid("admin tokens are not scoped to a tenant")
        if request.tenant:
            await self._require_tenant(request.tenant)
        new = await self._tokens.issue(request.role, request.tenant, request.name, request.owner)
        await self._audit.record(request.tenant, "create_token", principal().actor, subject=new.name)
        return apb.CreateTokenResponse(token=new.token, token_id=new.id, name=new.name)

    async def RevokeToken(
        self, request: apb.RevokeTokenRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.RevokeTokenResponse:
        token_id = await self._find_token(request.token_id, request.name, missing_ok=True)
        info = await self._tokens.info(token_id) if token_id else None
        revoked = bool(token_id) and await self._tokens.revoke_id(token_id)
        if revoked and info is not None:
            await self._audit.record(info.tenant, "revoke_token", principal().actor, subject=info.name or info.id)
        return apb.RevokeTokenResponse(revoked=revoked)

    async def RotateToken(
        self, request: apb.RotateTokenRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.CreateTokenResponse:
        token_id = await self._find_token(request.token_id, request.name)
        info = await self._tokens.info(token_id)
        new = await self._tokens.rotate(token_id)
        if new is None or info is None:
            raise not_found(f"token {request.token_id or request.name!r} not found")
        await self._audit.record(info.tenant, "rotate_token", principal().actor, subject=new.name or new.id)
        return apb.CreateTokenResponse(token=new.token, token_id=new.id, name=new.name)

    async def ListTokens(
        self, request: apb.ListTokensRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.ListTokensResponse:
        if request.tenant:
            validation.tenant_name(request.tenant)
        return apb.ListTokensResponse(
            tokens=[
                apb.TokenInfo(
                    id=t.id, role=t.role, tenant=t.tenant, created_at=t.created_at, name=t.name, owner=t.owner
                )
                for t in await self._tokens.list_tokens(request.tenant)
            ]
        )

    async def _find_token(self, token_id: str, name: str, missing_ok: bool = False) -> str:
        if token_id and not TOKEN_ID_RE.fullmatch(token_id):
            raise invalid(
                "give the id of the token (12 hex digits, as ListTokens shows) or its name, never the token itself"
            )
        if not token_id and not name:
            raise invalid("give the token's id or its name")
        if len(name) > 100:
            raise invalid("a token name is at most 63 characters")
        found = await self._tokens.find_id(token_id or name)
        if found is None and not missing_ok:
            raise not_found(f"token {token_id or name!r} not found")
        return found or ""

    # Limits -----------------------------------------------------------------

    async def SetLimits(
        self, request: apb.SetLimitsRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.TenantLimits:
        await self._require_tenant(request.tenant)
        await self._limits.set(
            request.tenant, limit_changes(request.limits), principal().actor, request.reason, request.until
        )
        return await self._tenant_limits(request.tenant)

    async def GetLimits(
        self, request: apb.GetLimitsRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.TenantLimits:
        await self._require_tenant(request.tenant)
        return await self._tenant_limits(request.tenant)

    async def ListAudit(
        self, request: apb.ListAuditRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.ListAuditResponse:
        if request.tenant:
            # A deleted tenant's trail stays readable: validate the name, not its existence.
            trails = [validation.tenant_name(request.tenant)]
        else:
            trails = ["", *await self._tenants.names()]
        if len(request.actor) > 100:
            raise invalid("an actor is a token name, at most 63 characters")
        entries = await self._audit.query(
            trails, min(request.limit or 100, 10_000), actor=request.actor, since=request.since
        )
        return apb.ListAuditResponse(entries=[_audit_proto(e) for e in entries])

    # Limit requests ---------------------------------------------------------

    async def ListLimitRequests(
        self, request: apb.ListLimitRequestsRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.ListLimitRequestsResponse:
        check_state(request.state)
        if request.tenant:
            validation.tenant_name(request.tenant)
            found = await self._requests.of_tenant(request.tenant, request.state)
        elif request.state == "pending":
            found = await self._requests.pending()
        else:
            found = await self._requests.of_tenants(await self._tenants.names(), request.state)
        return apb.ListLimitRequestsResponse(requests=[request_proto(r) for r in found])

    async def ApproveLimitRequest(
        self, request: apb.DecideLimitRequestRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.LimitRequest:
        return request_proto(await self._requests.decide(request.id, True, principal().actor, request.reason))

    async def DenyLimitRequest(
        self, request: apb.DecideLimitRequestRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.LimitRequest:
        return request_proto(await self._requests.decide(request.id, False, principal().actor, request.reason))

    async def _require_tenant(self, tenant: str) -> None:
        validation.tenant_name(tenant)
        if not await self._tenants.exists(tenant):
            raise not_found(f"tenant {tenant!r} not found")

    async def _tenant_limits(self, tenant: str) -> apb.TenantLimits:
        return apb.TenantLimits(
            tenant=tenant,
            limits=limits_proto(await self._limits.effective(tenant)),
            overrides=limits_proto(await self._limits.overrides(tenant)),
            temporary=[
                apb.TemporaryLimit(limit=t.limit, value=t.value, restores=max(0, t.restores), until=t.expires)
                for t in await self._limits.temporary(tenant)
            ],
        )
