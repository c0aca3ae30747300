"""fanout.v1.QuotaService: a tenant asks for more, follows its requests, and checks a fanout before running it."""

from __future__ import annotations

from typing import Any

from grpc import aio

from fanout.quota.actions import ActionStore
from fanout.quota.audit import AuditLog
from fanout.quota.limits import LimitStore
from fanout.quota.requests import RequestStore
from fanout.server.admin_service import check_state, limit_changes, request_proto
from fanout.server.auth import principal
from fanout.server.status import invalid
from fanout.v1 import admin_pb2 as apb
from fanout.v1 import admin_pb2_grpc


class QuotaService(admin_pb2_grpc.QuotaServiceServicer):
    def __init__(self, store: ActionStore, limits: LimitStore, requests: RequestStore, audit: AuditLog) -> None:
        self._store = store
        self._limits = limits
        self._requests = requests
        self._audit = audit

    async def RequestLimit(
        self, request: apb.RequestLimitRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.LimitRequest:
        who = principal()
        filed = await self._requests.file(who.tenant, who.actor, limit_changes(request.limits), request.reason)
        await self._audit.record(who.tenant, "request_limit", who.actor, subject=filed.id, reason=request.reason)
        return request_proto(filed)

    async def ListMyLimitRequests(
        self, request: apb.ListLimitRequestsRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.ListLimitRequestsResponse:
        check_state(request.state)
        # The tenant comes from the token: a tenant field naming another one is ignored, never honoured.
        found = await self._requests.of_tenant(principal().tenant, request.state)
        return apb.ListLimitRequestsResponse(requests=[request_proto(r) for r in found])

    async def CheckFanout(
        self, request: apb.CheckFanoutRequest, context: aio.ServicerContext[Any, Any]
    ) -> apb.CheckFanoutResponse:
        """The admission script's two counts for a new run: its size against max_fanout, and the
        tenant's admitted, unfinished actions against max_queued. Nothing is charged."""
        if request.fanout < 1:
            raise invalid("give the number of actions of the run (root included), at least 1")
        tenant = principal().tenant
        limits = await self._limits.effective(tenant)
        queued = await self._store.queued(tenant)
        room = {
            "max_fanout": limits.max_fanout - request.fanout,
            "max_queued": limits.max_queued - queued - request.fanout,
        }
        refused = [name for name, left in room.items() if left < 0]
        return apb.CheckFanoutResponse(
            admitted=not refused,
            limit=refused[0] if refused else "",
            headroom=0 if refused else min(room.values()),
            max_fanout=limits.max_fanout,
            queued=queued,
            max_queued=limits.max_queued,
        )
