"""fanout.v1.DispatchService: dispatchers lease actions on a stream and report phases.

Leasing is fair across tenants: each round starts at the next tenant and
takes a bounded chunk from each, so one tenant's huge fanout cannot starve
another's small one. Each tenant's max_concurrency bounds what is leased.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from fanout.quota import phases
from fanout.quota.actions import ActionStore, LeasedAction, Report
from fanout.quota.limits import LimitStore
from fanout.quota.tokens import Principal, TokenStore
from fanout.server import metrics, validation
from fanout.server.auth import principal
from fanout.server.status import denied, invalid
from fanout.server.wakeup import Wakeup
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc

log = logging.getLogger(__name__)

# Most actions leased from one tenant per round; the rest wait for the next round.
TENANT_CHUNK = 256
# How often an idle lease stream looks for work admitted through other servers.
IDLE_POLL_SECONDS = 0.05
TENANTS_REFRESH_SECONDS = 2.0


class DispatchService(dispatch_pb2_grpc.DispatchServiceServicer):
    def __init__(self, store: ActionStore, limits: LimitStore, tokens: TokenStore, wakeup: Wakeup) -> None:
        self._store = store
        self._limits = limits
        self._tokens = tokens
        self._wakeup = wakeup
        self._round = itertools.count()

    async def Lease(
        self, request_iterator: AsyncIterator[dpb.LeaseRequest], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[dpb.LeaseResponse]:
        who = principal()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("msg") != "hello":
            raise invalid("the first message on a lease stream must be hello")
        if first.hello.capacity < 1:
            raise invalid("hello.capacity must be at least 1")
        credit = _Credit(first.hello.capacity)
        reader = asyncio.create_task(self._read(request_iterator, who, credit))
        tenants: list[str] = []
        tenants_at = 0.0
        try:
            while not reader.done():
                if credit.value <= 0:
                    await credit.wait()
                    continue
                if time.monotonic() - tenants_at > TENANTS_REFRESH_SECONDS:
                    tenants = [who.tenant] if who.tenant else await self._store.tenants()
                    tenants_at = time.monotonic()
                leased = await self._lease_round(tenants, credit.value)
                if not leased:
                    await self._wakeup.wait(IDLE_POLL_SECONDS)
                    continue
                credit.value -= len(leased)
                now = time.time()
                response = dpb.LeaseResponse(lease_seconds=self._store.lease_seconds)
                for action in leased:
                    metrics.DISPATCH_LATENCY.observe(max(0.0, now - action.admitted_at))
                    response.actions.append(await self._to_proto(action))
                metrics.ACTIONS_LEASED.inc(len(leased))
                yield response
        finally:
            reader.cancel()

    async def _lease_round(self, tenants: list[str], credit: int) -> list[LeasedAction]:
        if not tenants:
            return []
        start = next(self._round) % len(tenants)
        out: list[LeasedAction] = []
        for tenant in tenants[start:] + tenants[:start]:
            if len(out) >= credit:
                break
            out += await self._store.lease(tenant, min(TENANT_CHUNK, credit - len(out)))
        return out

    async def _read(self, requests: AsyncIterator[dpb.LeaseRequest], who: Principal, credit: _Credit) -> None:
        async for msg in requests:
            kind = msg.WhichOneof("msg")
            if kind == "credit":
                credit.add(msg.credit)
            elif kind == "heartbeat":
                by_tenant: dict[str, list[str]] = defaultdict(list)
                for ref in msg.heartbeat.leases:
                    tenant, _, run_action = ref.partition("/")
                    if who.tenant and tenant != who.tenant:
                        continue
                    by_tenant[tenant].append(run_action)
                for tenant, refs in by_tenant.items():
                    await self._store.heartbeat(tenant, refs)

    async def _to_proto(self, action: LeasedAction) -> dpb.LeasedAction:
        return dpb.LeasedAction(
            tenant=action.tenant,
            run=action.run,
            spec=pb.ActionSpec.FromString(action.spec),
            attempt=action.attempt,
            action_token=await self._tokens.mint_action_token(action.tenant, action.run, action.name),
            parent=action.parent,
            admitted_at=action.admitted_at,
        )

    async def Report(self, request: dpb.ReportRequest, context: aio.ServicerContext[Any, Any]) -> dpb.ReportResponse:
        who = principal()
        by_tenant: dict[str, list[Report]] = defaultdict(list)
        for r in request.reports:
            if who.tenant and r.tenant != who.tenant:
                raise denied(f"this dispatcher serves tenant {who.tenant!r}, not {r.tenant!r}")
            validation.tenant_name(r.tenant)
            validation.run_name(r.run)
            validation.action_name(r.name)
            if r.phase not in (pb.RUNNING, *phases.TERMINAL):
                raise invalid(f"action {r.name!r}: a dispatcher reports RUNNING or a terminal phase, not {r.phase}")
            limits = await self._limits.effective(r.tenant)
            validation.result(r.result, limits.max_payload_bytes, r.name)
            result = r.result.SerializeToString() if phases.is_terminal(r.phase) else b""
            by_tenant[r.tenant].append(Report(r.run, r.name, r.attempt, r.phase, result))
        ignored = 0
        for tenant, reports in by_tenant.items():
            ignored += await self._store.report(tenant, reports)
        for r in request.reports:
            if phases.is_terminal(r.phase):
                metrics.ACTIONS_FINISHED.labels(phase=phases.name(r.phase)).inc()
        metrics.REPORTS_IGNORED.inc(ignored)
        self._wakeup.notify()
        return dpb.ReportResponse(ignored=ignored)


class _Credit:
    """How many more actions the dispatcher on this stream can take."""

    def __init__(self, value: int) -> None:
        self.value = value
        self._more = asyncio.Event()

    def add(self, n: int) -> None:
        self.value += n
        self._more.set()

    async def wait(self) -> None:
        self._more.clear()
        try:
            await asyncio.wait_for(self._more.wait(), 1.0)
        except TimeoutError:
            pass
