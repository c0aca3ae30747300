"""fanout.v1.AdminService: tenants, tokens, limits and their audit trail."""

from __future__ import annotations

from typing import Any

import grpc
from grpc import aio

from fanout.quota.actions import ActionStore
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.tokens import TOKEN_ID_RE, TokenStore
from fanout.server import validation
from fanout.server.auth import principal
from fanout.server.status import ServiceError, invalid, not_found
from fanout.v1 import admin_pb2 as apb
from fanout.v1 import admin_pb2_grpc


def _limits_proto(values: Limits | dict[str, int]) -> apb.Limits:
    if isinstance(values, Limits):
        return apb.Limits(**{name: getattr(values, name) for name in Limits.names()})
    return apb.Limits(**values)


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: ActionStore, limits: LimitStore, tokens: TokenStore) -> None:
        self._store = store
        self._limits = limits
        self._tokens = tokens

    async def CreateTenant(
        self, request: apb.CreateTenantRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.CreateTenantResponse:
        tenant = validation.tenant_name(request.tenant)
        if not await self._store.register_tenant(tenant):
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS, f"tenant {tenant!r} exists; use CreateToken for another token"
            )
        new = await self._tokens.issue("tenant", tenant)
        return apb.CreateTenantResponse(tenant=tenant, token=new.token, token_id=new.id)

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
        new = await self._tokens.issue(request.role, request.tenant)
        return apb.CreateTokenResponse(token=new.token, token_id=new.id)

    async def RevokeToken(
        self, request: apb.RevokeTokenRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.RevokeTokenResponse:
        if not TOKEN_ID_RE.fullmatch(request.token_id):
            raise invalid("give the id of the token to revoke (12 hex digits, as ListTokens shows), not the token")
        return apb.RevokeTokenResponse(revoked=await self._tokens.revoke_id(request.token_id))

    async def ListTokens(
        self, request: apb.ListTokensRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.ListTokensResponse:
        if request.tenant:
            validation.tenant_name(request.tenant)
        return apb.ListTokensResponse(
            tokens=[
                apb.TokenInfo(id=t.id, role=t.role, tenant=t.tenant, created_at=t.created_at)
                for t in await self._tokens.list_tokens(request.tenant)
            ]
        )

    async def SetLimits(
        self, request: apb.SetLimitsRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.TenantLimits:
        await self._require_tenant(request.tenant)
        changes = {name: getattr(request.limits, name) for name in Limits.names() if getattr(request.limits, name)}
        await self._limits.set(request.tenant, changes, actor=principal().label, reason=request.reason)
        return await self._tenant_limits(request.tenant)

    async def GetLimits(
        self, request: apb.GetLimitsRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.TenantLimits:
        await self._require_tenant(request.tenant)
        return await self._tenant_limits(request.tenant)

    async def ListAudit(
        self, request: apb.ListAuditRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.ListAuditResponse:
        await self._require_tenant(request.tenant)
        entries = await self._limits.audit(request.tenant, min(request.limit or 100, 10_000))
        return apb.ListAuditResponse(
            entries=[
                apb.AuditEntry(
                    at=e.at,
                    actor=e.actor,
                    tenant=e.tenant,
                    limit=e.limit,
                    old_value=e.old,
                    new_value=e.new,
                    reason=e.reason,
                )
                for e in entries
            ]
        )

    async def _require_tenant(self, tenant: str) -> None:
        validation.tenant_name(tenant)
        if tenant not in await self._store.tenants():
            raise not_found(f"tenant {tenant!r} not found")

    async def _tenant_limits(self, tenant: str) -> apb.TenantLimits:
        return apb.TenantLimits(
            tenant=tenant,
            limits=_limits_proto(await self._limits.effective(tenant)),
            overrides=_limits_proto(await self._limits.overrides(tenant)),
        )
