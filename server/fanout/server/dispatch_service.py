"""fanout.v1.DispatchService: dispatchers lease actions on a stream and report phases.

Leasing is fair across tenants: each round starts at the next tenant and
takes a bounded chunk from each, so one tenant's huge fanout cannot starve
another's small one. Each tenant's max_concurrency bounds what is leased.
An idle stream polls only the tenants marked ready, so its cost does not
grow with the number of tenants.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from fanout.quota import phases
from fanout.quota.actions import ActionStore, LeasedAction, LeaseRef, Report
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
# How long a stream with no credit sleeps between checks for heartbeat answers.
FULL_POLL_SECONDS = 1.0
# Rounds visit only the tenants marked ready (work admitted, requeued or due
# for retry); now and then a round visits every tenant, as a safety net.
SWEEP_SECONDS = 2.0


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
        stream = _Stream(first.hello.capacity)
        self._wakeup.register(stream.nudge)
        reader = asyncio.create_task(self._read(request_iterator, who, stream))
        swept_at = 0.0
        try:
            while not reader.done():
                while stream.outbox:
                    yield stream.outbox.popleft()
                leased: list[LeasedAction] = []
                if stream.credit > 0:
                    if who.tenant:
                        tenants = [who.tenant]
                    elif time.monotonic() - swept_at > SWEEP_SECONDS:
                        tenants, swept_at = await self._store.tenants(), time.monotonic()
                    else:
                        tenants = await self._store.ready_tenants()
                    leased = await self._lease_round(tenants, stream.credit)
                if leased:
                    stream.credit -= len(leased)
                    yield await self._response(leased)
                    continue
                stream.nudge.clear()
                if not stream.outbox:
                    with contextlib.suppress(TimeoutError):
                        poll = IDLE_POLL_SECONDS if stream.credit > 0 else FULL_POLL_SECONDS
                        await asyncio.wait_for(stream.nudge.wait(), poll)
            failure = reader.exception()
            if failure is not None:
                raise failure  # e.g. Redis down during a heartbeat: end the stream with its status
        finally:
            self._wakeup.unregister(stream.nudge)
            reader.cancel()

    async def _response(self, leased: list[LeasedAction]) -> dpb.LeaseResponse:
        now = time.time()
        response = dpb.LeaseResponse(lease_seconds=self._store.lease_seconds)
        payload_caps: dict[str, int] = {}
        for action in leased:
            metrics.DISPATCH_LATENCY.observe(max(0.0, now - action.admitted_at))
            if action.tenant not in payload_caps:  # one limits read per tenant, not per action
                payload_caps[action.tenant] = (await self._limits.effective(action.tenant)).max_payload_bytes
            response.actions.append(self._to_proto(action, payload_caps[action.tenant]))
        metrics.ACTIONS_LEASED.inc(len(leased))
        return response

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

    async def _read(self, requests: AsyncIterator[dpb.LeaseRequest], who: Principal, stream: _Stream) -> None:
        async for msg in requests:
            kind = msg.WhichOneof("msg")
            if kind == "credit":
                stream.credit += msg.credit
            elif kind == "heartbeat":
                answer = await self._heartbeat(who, msg.heartbeat)
                if answer.waiting or answer.cancelled:
                    stream.outbox.append(answer)
            stream.nudge.set()

    async def _heartbeat(self, who: Principal, heartbeat: dpb.Heartbeat) -> dpb.LeaseResponse:
        by_tenant: dict[str, list[LeaseRef]] = defaultdict(list)
        for ref in heartbeat.leases:
            if not who.tenant or ref.tenant == who.tenant:
                by_tenant[ref.tenant].append(LeaseRef(ref.run, ref.name, ref.attempt))
        answer = dpb.LeaseResponse(lease_seconds=self._store.lease_seconds)
        for tenant, refs in by_tenant.items():
            waiting, cancelled = await self._store.heartbeat(tenant, refs)
            answer.waiting.extend(_ref_proto(tenant, r) for r in waiting)
            answer.cancelled.extend(_ref_proto(tenant, r) for r in cancelled)
        return answer

    def _to_proto(self, action: LeasedAction, max_payload_bytes: int) -> dpb.LeasedAction:
        return dpb.LeasedAction(
            tenant=action.tenant,
            run=action.run,
            spec=pb.ActionSpec.FromString(action.spec),
            attempt=action.attempt,
            action_token=self._tokens.mint_action_token(action.tenant, action.run, action.name, action.attempt),
            parent=action.parent,
            admitted_at=action.admitted_at,
            max_payload_bytes=max_payload_bytes,
        )

    async def Report(self, request: dpb.ReportRequest, context: aio.ServicerContext[Any, Any]) -> dpb.ReportResponse:
        """Apply each report on its own: one bad report never costs its siblings their results.

        A malformed report is refused and named in the answer; an output over
        the tenant's cap fails only its action (OutputTooLarge). Only a report
        for another tenant than a scoped dispatcher's refuses the whole call.
        """
        who = principal()
        by_tenant: dict[str, list[Report]] = defaultdict(list)
        payload_caps: dict[str, int] = {}
        refused: list[dpb.RefusedReport] = []
        refused_reports = 0
        finished: list[int] = []
        for i, r in enumerate(request.reports):
            if who.tenant and r.tenant != who.tenant:
                raise denied(f"this dispatcher serves tenant {who.tenant!r}, not {r.tenant!r}")
            problems = validation.report_violations(r)
            if problems:
                refused += [dpb.RefusedReport(field=f"reports[{i}].{f}", description=d) for f, d in problems]
                refused_reports += 1
                continue
            phase, retry_after, result = r.phase, min(max(r.retry_after_seconds, 0.0), 3600.0), b""
            if phases.is_terminal(phase):
                if r.tenant not in payload_caps:  # one limits read per tenant, not per report
                    payload_caps[r.tenant] = (await self._limits.effective(r.tenant)).max_payload_bytes
                too_big = validation.oversize_output(r.result, payload_caps[r.tenant], r.name)
                if too_big:  # it would be too big again on a retry: fail now, clearly
                    phase, retry_after = pb.FAILED, 0.0
                    outcome = pb.ActionResult(error=pb.ActionError(type="OutputTooLarge", message=too_big))
                else:
                    outcome = validation.clipped(r.result)
                result = outcome.SerializeToString()
                if not retry_after:
                    finished.append(phase)
            by_tenant[r.tenant].append(Report(r.run, r.name, r.attempt, phase, result, retry_after))
        if refused:
            log.warning(
                "refused %d malformed reports from %s, applied the other %d; first: %s",
                refused_reports,
                who.label,
                len(request.reports) - refused_reports,
                refused[0].description,
            )
        ignored = 0
        for tenant, reports in by_tenant.items():
            ignored += await self._store.report(tenant, reports)
        for phase in finished:
            metrics.ACTIONS_FINISHED.labels(phase=phases.name(phase)).inc()
        metrics.REPORTS_IGNORED.inc(ignored)
        self._wakeup.notify()
        return dpb.ReportResponse(ignored=ignored, refused=refused)


class _Stream:
    """One dispatcher's lease stream: its credit and the answers waiting to be sent."""

    def __init__(self, credit: int) -> None:
        self.credit = credit
        self.outbox: deque[dpb.LeaseResponse] = deque()
        self.nudge = asyncio.Event()


def _ref_proto(tenant: str, ref: LeaseRef) -> dpb.LeaseRef:
    return dpb.LeaseRef(tenant=tenant, run=ref.run, name=ref.name, attempt=ref.attempt)
