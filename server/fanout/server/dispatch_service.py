"""fanout.v1.DispatchService: dispatchers lease actions on a stream and report phases.

Leases are pushed: a stream sleeps until a tenant it can serve is woken
(wakeup.py: admitted, requeued, a retry due or a slot freed, on any server),
then leases from the tenants woken, a chunk (one response) at a time.
Leasing is fair across tenants: round robin, a bounded chunk each, and a
tenant just woken goes first, so one tenant's huge fanout cannot hold up
another's small one; a tenant that still had work after its chunk goes to
the back. Each tenant's max_concurrency bounds what is leased. Now and then
a stream sweeps every tenant, a safety net for a lost wake, never the way
work is found.

Phase reports come on the stream too (the first response says this server
takes them), each batch answered on it: the stream's token was checked when
it opened, so a batch costs a message each way, not a call and a token
lookup. The Report call stays, for older dispatchers and other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.rpc import code_pb2
from grpc import aio

from fanout.output import OUTPUT_MAX_BYTES
from fanout.quota import phases
from fanout.quota.actions import ActionStore, LeasedAction, LeaseRef, Report
from fanout.quota.limits import LimitStore
from fanout.quota.tokens import Principal, TokenStore
from fanout.server import event_log, metrics, validation
from fanout.server.auth import principal
from fanout.server.histograms import observe_many
from fanout.server.status import denied, invalid, to_rpc_status
from fanout.server.wakeup import Wakeup
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc

log = logging.getLogger(__name__)

# Most actions leased from one tenant per round; the rest wait for the next round.
TENANT_CHUNK = 256
# How long a stream with no credit sleeps between checks for heartbeat answers.
FULL_POLL_SECONDS = 1.0
# How often a stream visits every tenant whether woken or not: the safety net for a wake
# lost with a broken subscription, or work made leasable by a raised limit.
SWEEP_SECONDS = 2.0
# Reports a Report call reads in one turn of the event loop (a dispatcher sends up to 4,000 at once).
REPORTS_PER_TURN = 500


class DispatchService(dispatch_pb2_grpc.DispatchServiceServicer):
    def __init__(self, store: ActionStore, limits: LimitStore, tokens: TokenStore, wakeup: Wakeup) -> None:
        self._store = store
        self._limits = limits
        self._tokens = tokens
        self._wakeup = wakeup

    async def Lease(
        self, request_iterator: AsyncIterator[dpb.LeaseRequest], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[dpb.LeaseResponse]:
        who = principal()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("msg") != "hello":
            raise invalid("the first message on a lease stream must be hello")
        stream = _Stream(first.hello.capacity, who.tenant)
        self._wakeup.register(stream)
        reader = asyncio.create_task(self._read(request_iterator, who, stream))
        next_sweep = 0.0
        try:
            yield dpb.LeaseResponse(lease_seconds=self._store.lease_seconds, takes_reports=True)
            while not reader.done():
                while stream.outbox:
                    yield stream.outbox.popleft()
                if stream.credit > 0:
                    if time.monotonic() >= next_sweep:
                        stream.sweep()
                    if stream.sweep_due:
                        stream.sweep_due = False
                        next_sweep = time.monotonic() + SWEEP_SECONDS
                        stream.woken.update([who.tenant] if who.tenant else await self._store.tenants())
                    tenant = stream.next_tenant()
                    if tenant is not None:
                        response, drained = await self._lease(stream, tenant)
                        if response is not None:
                            yield response
                        if drained:  # once the actions went out: they need not wait for it
                            _mark_idle(self._store, stream, tenant)
                        continue
                stream.nudge.clear()
                if stream.outbox or (stream.credit > 0 and (stream.woken or stream.sweep_due)):
                    continue  # woken while leasing: go round again at once
                with contextlib.suppress(TimeoutError):
                    timeout = next_sweep - time.monotonic() if stream.credit > 0 else FULL_POLL_SECONDS
                    await asyncio.wait_for(stream.nudge.wait(), max(timeout, 0.0))
            failure = reader.exception()
            if failure is not None:
                raise failure  # e.g. Redis down during a heartbeat: end the stream with its status
        finally:
            self._wakeup.unregister(stream)
            reader.cancel()
            # Batches still being applied stop here: unanswered, they are sent again (reports are idempotent).
            # An unmarking stopped halfway may leave a tenant with work unmarked: the sweeps wake it.
            for task in (*stream.reports, *stream.idling):
                task.cancel()

    async def _lease(self, stream: _Stream, tenant: str) -> tuple[dpb.LeaseResponse | None, bool]:
        """Lease a chunk of `tenant`'s work: its own response, sent as soon as it is leased, and
        whether that took the tenant's last waiting work."""
        want = min(TENANT_CHUNK, stream.credit)
        # Only a dispatcher scoped to the tenant leases a BYOC tenant's work (lease.lua checks the placement).
        scoped = stream.scope == tenant
        leased, drained = await self._store.lease_chunk(tenant, want, scoped)
        if len(leased) == want:
            stream.wanted[tenant] = None  # more may wait: its next chunk after the other tenants'
        if not leased:
            return None, drained
        stream.credit -= len(leased)
        now = time.time()
        response = dpb.LeaseResponse(lease_seconds=self._store.lease_seconds)
        for action in leased:
            self._add_proto(response, action)
        observe_many(metrics.DISPATCH_LATENCY, [max(0.0, now - action.admitted_at) for action in leased])
        metrics.ACTIONS_LEASED.inc(len(leased))
        return response, drained

    async def _read(self, requests: AsyncIterator[dpb.LeaseRequest], who: Principal, stream: _Stream) -> None:
        async for msg in requests:
            kind = msg.WhichOneof("msg")
            if kind == "credit":
                stream.credit += msg.credit
            elif kind == "heartbeat":
                answer = await self._heartbeat(who, msg.heartbeat)
                if answer.waiting or answer.cancelled:
                    stream.outbox.append(answer)
            elif kind == "report":
                # Beside the reading: credit and heartbeats must not wait for a batch's scripts.
                task = asyncio.create_task(self._answer(who, stream, msg.report))
                stream.reports.add(task)
                task.add_done_callback(stream.reports.discard)
            stream.nudge.set()

    async def _answer(self, who: Principal, stream: _Stream, report: dpb.StreamedReport) -> None:
        """Apply a batch of reports sent on the stream; its answer goes out on the stream."""
        answer = dpb.ReportAnswer(id=report.id)
        try:
            answer.response.CopyFrom(await self._apply(who, report.reports))
        except Exception as exc:
            status = to_rpc_status(exc)
            if status is None:  # a bug: said as a Report call would say it, and logged
                log.exception("applying %d reports sent on a lease stream failed", len(report.reports))
                answer.error_code, answer.error_details = grpc.StatusCode.INTERNAL.value[0], "internal error"
            else:
                answer.error_code, answer.error_details = status.code, status.message
                metrics.RPC_ERRORS.labels(code=code_pb2.Code.Name(status.code)).inc()
        stream.outbox.append(dpb.LeaseResponse(answers=[answer]))
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

    def _add_proto(self, response: dpb.LeaseResponse, action: LeasedAction) -> None:
        leased = response.actions.add(
            tenant=action.tenant,
            run=action.run,
            attempt=action.attempt,
            action_token=self._tokens.mint_action_token(action.tenant, action.run, action.name, action.attempt),
            parent=action.parent,
            admitted_at=action.admitted_at,
            max_payload_bytes=action.max_payload_bytes,
        )
        leased.spec.MergeFromString(action.spec)  # parsed in place: no copy of the spec

    async def Report(self, request: dpb.ReportRequest, context: aio.ServicerContext[Any, Any]) -> dpb.ReportResponse:
        return await self._apply(principal(), request.reports)

    async def _apply(self, who: Principal, reports: Sequence[dpb.PhaseReport]) -> dpb.ReportResponse:
        """Apply each report on its own: one bad report never costs its siblings their results.

        A malformed report is refused and named in the answer; an output over
        the tenant's cap fails only its action (OutputTooLarge). Only a report
        for another tenant than a scoped dispatcher's refuses the whole batch.
        """
        by_tenant: dict[str, list[Report]] = defaultdict(list)
        payload_caps: dict[str, int] = {}
        refused: list[dpb.RefusedReport] = []
        refused_reports = 0
        finished: list[int] = []
        printed: dict[str, list[tuple[str, str, int, bytes]]] = defaultdict(list)
        for i, r in enumerate(reports):
            if i and i % REPORTS_PER_TURN == 0:
                await asyncio.sleep(0)  # a big call must not hold up every other stream and call
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
                if outcome.output:
                    # What the attempt printed is kept apart: watches carry results to every parent.
                    printed[r.tenant].append((r.run, r.name, r.attempt, outcome.output[-OUTPUT_MAX_BYTES:]))
                    outcome = _without_output(outcome)
                result = outcome.SerializeToString()
                if not retry_after:
                    finished.append(phase)
                if phase != pb.SUCCEEDED:
                    event_log.action_failed(r.tenant, r.run, r.name, r.attempt, phases.name(phase), outcome.error.type)
            by_tenant[r.tenant].append(Report(r.run, r.name, r.attempt, phase, result, retry_after))
        if refused:
            log.warning(
                "refused %d malformed reports from %s, applied the other %d; first: %s",
                refused_reports,
                who.label,
                len(reports) - refused_reports,
                refused[0].description,
            )
        for tenant, outputs in printed.items():  # before the results: a parent woken by one finds its output
            await self._store.keep_outputs(tenant, outputs)
        ignored = 0
        for tenant, reports in by_tenant.items():
            ignored += await self._store.report(tenant, reports)  # wakes the streams if it freed a slot
            retries = [r.retry_after for r in reports if r.retry_after]
            if retries:
                metrics.RETRIES.labels(tenant=metrics.tenant_label(tenant)).inc(len(retries))
                self._wakeup.wake_later(tenant, min(retries))
        for phase, count in Counter(finished).items():  # one metric update per phase, not per report
            metrics.ACTIONS_FINISHED.labels(phase=phases.name(phase)).inc(count)
        metrics.REPORTS_IGNORED.inc(ignored)
        return dpb.ReportResponse(ignored=ignored, refused=refused)


def _without_output(result: pb.ActionResult) -> pb.ActionResult:
    kept = pb.ActionResult()
    kept.CopyFrom(result)
    kept.ClearField("output")
    return kept


class _Stream:
    """One dispatcher's lease stream: its credit, the tenants it may lease from, the answers to send."""

    def __init__(self, credit: int, scope: str) -> None:
        self.credit = credit
        self.scope = scope  # a dispatcher scoped to a tenant hears of that tenant only
        self.outbox: deque[dpb.LeaseResponse] = deque()
        # Tenants woken since the last round; tenants that had work left after it (insertion order).
        self.woken: set[str] = set()
        self.wanted: dict[str, None] = {}
        self.sweep_due = True
        self.nudge = asyncio.Event()
        self.reports: set[asyncio.Task[None]] = set()  # batches sent on the stream, being applied
        self.idling: set[asyncio.Task[None]] = set()  # drained tenants being unmarked (_mark_idle)

    def wake(self, tenant: str) -> None:
        if not self.scope or tenant == self.scope:
            self.woken.add(tenant)
            self.nudge.set()

    def sweep(self) -> None:
        self.sweep_due = True
        self.nudge.set()

    def next_tenant(self) -> str | None:
        """The tenant to lease from next: one just woken first, else the longest waiting.

        A tenant leased from goes to the back while it has work left (round robin, a chunk
        each); one just woken goes to the front: a small tenant's first action does not wait
        for the chunks of the tenants already busy.
        """
        fresh = [tenant for tenant in self.woken if tenant not in self.wanted]
        self.woken.clear()
        if fresh:
            self.wanted = {**dict.fromkeys(fresh), **self.wanted}
        for tenant in self.wanted:
            del self.wanted[tenant]
            return tenant
        return None


def _mark_idle(store: ActionStore, stream: _Stream, tenant: str) -> None:
    """Unmark a drained tenant (ActionStore.mark_idle) beside the stream, not in it.

    Its round trips took tens of milliseconds behind a busy Redis, and a stream awaiting them
    leased nothing meanwhile: a small tenant woken then waited for another tenant's unmarking.
    """
    task = asyncio.create_task(store.mark_idle(tenant))
    stream.idling.add(task)
    task.add_done_callback(functools.partial(_idled, stream))


def _idled(stream: _Stream, task: asyncio.Task[None]) -> None:
    stream.idling.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        # A mark left behind costs a lease that finds nothing; Redis down ends the streams anyway.
        log.warning("could not mark a drained tenant idle: %s", exc)


def _ref_proto(tenant: str, ref: LeaseRef) -> dpb.LeaseRef:
    return dpb.LeaseRef(tenant=tenant, run=ref.run, name=ref.name, attempt=ref.attempt)
