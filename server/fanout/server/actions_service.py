"""fanout.v1.ActionService: runs, batches of children, watches, reads."""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import AsyncIterator, Sequence
from typing import Any

from google.rpc import code_pb2
from grpc import aio

from fanout.quota import phases
from fanout.quota.actions import MAX_ABORT_NAMES, ActionStore, EventsTrimmed
from fanout.quota.admission import Batch
from fanout.quota.bundles import BundleStore, term
from fanout.quota.errors import FailedPrecondition, NotFound, QuotaExceeded
from fanout.quota.limits import LIMIT_CEILING, Limits, LimitStore
from fanout.quota.listing import Listing, RunSummary
from fanout.quota.reports import ReportStore
from fanout.quota.tokens import Principal, TokenStore
from fanout.quota.traces import TraceStore
from fanout.server import event_log, metrics, run_views, validation
from fanout.server.auth import authorize, check_action_scope, principal
from fanout.server.concurrency import at_most
from fanout.server.run_views import PageLinks
from fanout.server.settings import Settings
from fanout.server.status import denied, invalid, not_found, to_rpc_status
from fanout.server.watch_events import Groups, replay, valid_cursor, watch_events
from fanout.server.watch_many import WATCH_BLOCK_MS, WatchMany
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc

log = logging.getLogger(__name__)

ROOT_ACTION = "root"
SUBMIT_ROLES = frozenset({"tenant", "action"})
# Sections of one SubmitMany admitted at once (a worker may send hundreds of parents).
SECTIONS_AT_ONCE = 8
_RUN_ALPHABET = string.ascii_lowercase + string.digits


def _queue_limits(wire: bytes, actions: Sequence[pb.ActionSpec]) -> dict[str, int]:
    """Name -> max_queued_seconds of the request's specs that have one. A request whose bytes
    (`wire`) hold no 0x78 (the field's tag) has none: that C-speed scan spares most batches a
    loop over every spec, about 2 ms per 10,000."""
    if b"\x78" not in wire:
        return {}
    return {spec.name: spec.max_queued_seconds for spec in actions if spec.max_queued_seconds}


def new_run_name() -> str:
    return "r" + "".join(secrets.choice(_RUN_ALPHABET) for _ in range(11))


class ActionService(actions_pb2_grpc.ActionServiceServicer):
    def __init__(
        self,
        settings: Settings,
        store: ActionStore,
        limits: LimitStore,
        tokens: TokenStore,
        bundles: BundleStore,
        listing: Listing,
        links: PageLinks,
        traces: TraceStore,
        reports: ReportStore,
    ) -> None:
        self._settings = settings
        self._traces = traces
        self._reports = reports
        self._bundles = bundles
        self._store = store
        self._limits = limits
        self._tokens = tokens
        self._listing = listing
        self._links = links

    async def CreateRun(
        self, request: pb.CreateRunRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CreateRunResponse:
        who = principal()
        run = validation.run_name(request.run_name) if request.run_name else new_run_name()
        root = pb.ActionSpec()
        root.CopyFrom(request.root)
        root.name = root.name or ROOT_ACTION
        inputs_bytes: int | None = None
        if root.bundle.digest:
            limits = await self._limits.effective(who.tenant)
            validation.spec(root, limits.max_payload_bytes)
            # The run's code must be here before it starts, and is kept as long as a new run may be.
            try:
                await self._bundles.touch(who.tenant, root.bundle.digest, term(limits.retention_seconds))
            except NotFound:
                raise FailedPrecondition(
                    f"bundle {root.bundle.digest} is not uploaded; upload it (BundleService.UploadBundle) first"
                ) from None
        else:
            # The tenant's payload cap is applied by the script that creates the run (admit.lua), which
            # reads the tenant's limits anyway: one round trip to Redis fewer before the root is admitted,
            # which under a large fanout was about 4 ms at the median and 10 at the 90th percentile.
            validation.spec(root, LIMIT_CEILING["max_payload_bytes"])
            inputs_bytes = len(root.inputs)
        spec = root.SerializeToString()
        created_at = await self._store.create_run(who.tenant, run, root.name, spec, inputs_bytes)
        if created_at is None:  # it exists: as it is now
            return pb.CreateRunResponse(run=await self._run(who.tenant, run))
        if root.max_queued_seconds:
            await self._store.set_queue_limits(who.tenant, run, {root.name: root.max_queued_seconds})
        event_log.run_created(who.tenant, run, root.name, root.task_name)
        metrics.ADMISSION_DECISIONS.labels(tenant=metrics.tenant_label(who.tenant), decision="admitted").inc()
        metrics.ACTIONS_ADMITTED.labels(tenant=metrics.tenant_label(who.tenant)).inc()
        # As its admission wrote it, not read back: under a big fanout that read was a wait in Redis'
        # queue and a turn of this loop between the admission and the answer.
        created = RunSummary.created(run, root.name, created_at)
        return pb.CreateRunResponse(run=run_views.run_message(created, self._links))

    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.SubmitBatchResponse:
        metrics.SUBMIT_CALLS.labels(rpc="SubmitBatch").inc()
        return await self._submit(principal(), request)

    async def SubmitMany(
        self, request: pb.SubmitManyRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.SubmitManyResponse:
        """Each parent's section admitted (or refused) on its own token, as its own SubmitBatch would be."""
        metrics.SUBMIT_CALLS.labels(rpc="SubmitMany").inc()
        total = sum(len(section.batch.actions) for section in request.sections)
        if total > self._settings.max_batch:
            raise invalid(f"{total} actions in one SubmitMany; the most is {self._settings.max_batch}")
        if request.ByteSize() > self._settings.max_batch_bytes:
            raise invalid(f"SubmitMany of {request.ByteSize()} bytes; the most is {self._settings.max_batch_bytes}")
        results = await at_most(SECTIONS_AT_ONCE, [self._section(section) for section in request.sections])
        return pb.SubmitManyResponse(results=results)

    async def _section(self, section: pb.SubmitSection) -> pb.SubmitSectionResult:
        try:
            who = await authorize(self._tokens, section.action_token, SUBMIT_ROLES)
            if section.batch.dry_run:
                raise invalid("a SubmitMany section cannot be a dry run; use SubmitBatch")
            return pb.SubmitSectionResult(admitted=await self._submit(who, section.batch))
        except Exception as exc:
            status = to_rpc_status(exc)
            if status is None:  # a bug: the whole call fails, as SubmitBatch would
                raise
            metrics.RPC_ERRORS.labels(code=code_pb2.Code.Name(status.code)).inc()
            return pb.SubmitSectionResult(error=status.SerializeToString())

    async def _submit(self, who: Principal, request: pb.SubmitBatchRequest) -> pb.SubmitBatchResponse:
        validation.run_name(request.run)
        validation.action_name(request.parent, "parent")
        check_action_scope(who, request.run, request.parent)
        limits = await self._limits.effective(who.tenant)
        # The specs go to Redis as the request serializes them, sliced, not one by one (Batch).
        wire = request.SerializeToString()
        head = pb.SubmitBatchRequest(run=request.run, parent=request.parent).ByteSize()
        names = [s.name for s in request.actions]
        fast = Batch.from_wire(wire, head, names)
        validation.batch(
            request.actions,
            self._settings.max_batch,
            limits.max_payload_bytes,
            self._settings.max_batch_bytes,
            sizes=fast.sizes() if fast else None,
            names=names,
        )
        metrics.BATCH_SIZE.observe(len(request.actions))
        batch = fast or Batch.from_pairs([(s.name, s.SerializeToString()) for s in request.actions])
        try:
            admission = await self._store.admit(who.tenant, request.run, request.parent, batch, dry_run=request.dry_run)
        except QuotaExceeded as exc:
            event_log.batch_refused(who.tenant, request.run, request.parent, exc)
            metrics.ADMISSION_DECISIONS.labels(
                tenant=metrics.tenant_label(who.tenant), decision=f"rejected_{exc.limit_name}"
            ).inc()
            raise
        if admission.admitted and not request.dry_run and (queue_limits := _queue_limits(wire, request.actions)):
            await self._store.set_queue_limits(who.tenant, request.run, queue_limits)
        if request.dry_run:
            metrics.ADMISSION_DECISIONS.labels(tenant=metrics.tenant_label(who.tenant), decision="dry_run").inc()
        else:
            event_log.batch_admitted(
                who.tenant, request.run, request.parent, admission.admitted, admission.already_present
            )
            metrics.ADMISSION_DECISIONS.labels(tenant=metrics.tenant_label(who.tenant), decision="admitted").inc()
            metrics.ACTIONS_ADMITTED.labels(tenant=metrics.tenant_label(who.tenant)).inc(admission.admitted)
            if admission.admitted and admission.fanout_used >= 0.9 * admission.fanout_limit:
                metrics.BATCHES_NEAR_FANOUT_LIMIT.labels(tenant=metrics.tenant_label(who.tenant)).inc()
        return pb.SubmitBatchResponse(
            admitted=admission.admitted,
            already_present=admission.already_present,
            fanout_used=admission.fanout_used,
            fanout_limit=admission.fanout_limit,
        )

    async def WatchChildren(
        self, request: pb.WatchChildrenRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchEvent]:
        who = principal()
        validation.run_name(request.run)
        if request.parent:
            validation.action_name(request.parent, "parent")
        check_action_scope(who, request.run, None)
        if not await self._store.exists(who.tenant, request.run):
            raise not_found(f"run {request.run!r} not found")
        metrics.WATCH_STREAMS.labels(rpc="WatchChildren").inc()
        cursor = request.cursor
        if cursor and not valid_cursor(cursor):
            raise invalid(f"cursor {cursor[:40]!r} is not a cursor this server handed out")
        groups = Groups(self._store, who.tenant, request.run) if request.with_groups else None
        if not cursor:
            async for event in replay(self._store, who.tenant, request):
                if groups:
                    await groups.fill(event)
                yield event
                cursor = event.cursor
        while True:
            try:
                changes = await self._store.events(who.tenant, request.run, request.parent, cursor, WATCH_BLOCK_MS)
            except EventsTrimmed:
                # The watch fell behind its parent's capped event stream: what was trimmed may
                # hold changes it never saw, so it gets current state again (repeats are harmless).
                async for event in replay(self._store, who.tenant, request, cursor):
                    if groups:
                        await groups.fill(event)
                    yield event
                    cursor = event.cursor
                continue
            if not changes:  # a heartbeat: neither update nor replay_done, only the cursor
                yield pb.WatchEvent(cursor=cursor)
                continue
            for event in watch_events(request, changes):
                if groups:
                    await groups.fill(event)
                yield event
            cursor = changes[-1][0]

    async def WatchMany(
        self, requests: AsyncIterator[pb.WatchManyRequest], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchManyResponse]:
        metrics.WATCH_STREAMS.labels(rpc="WatchMany").inc()
        async for response in WatchMany(self._store, self._tokens).serve(requests):
            yield response

    async def GetRun(self, request: pb.GetRunRequest, context: aio.ServicerContext[Any, Any]) -> pb.Run:
        who = principal()
        validation.run_name(request.run)
        check_action_scope(who, request.run, None)
        return await self._run(who.tenant, request.run)

    async def GetAction(self, request: pb.GetActionRequest, context: aio.ServicerContext[Any, Any]) -> pb.ActionStatus:
        who = principal()
        validation.run_name(request.run)
        validation.action_name(request.name)
        check_action_scope(who, request.run, None)
        spec_bytes, parent, phase, attempt, result = await self._store.get_action(who.tenant, request.run, request.name)
        spec = pb.ActionSpec.FromString(spec_bytes)
        status = pb.ActionStatus(
            run=request.run,
            name=request.name,
            parent=parent,
            task_name=spec.task_name,
            phase=phase,
            attempt=attempt,
            group=spec.group,
        )
        if phases.is_terminal(phase) and result:
            status.result.ParseFromString(result)
        return status

    async def GetLogs(self, request: pb.GetLogsRequest, context: aio.ServicerContext[Any, Any]) -> pb.GetLogsResponse:
        who = principal()
        validation.run_name(request.run)
        validation.action_name(request.name)
        check_action_scope(who, request.run, None)
        _, _, phase, latest, _ = await self._store.get_action(who.tenant, request.run, request.name)
        attempt = request.attempt or latest
        if attempt > latest:
            raise not_found(f"action {request.name!r} has had {latest} attempts, not {attempt}")
        printed = await self._listing.output(who.tenant, request.run, request.name, attempt)
        return pb.GetLogsResponse(attempt=attempt, phase=phase, output=printed or b"", kept=printed is not None)

    async def AbortRun(
        self, request: pb.AbortRunRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.AbortRunResponse:
        who = principal()
        validation.run_name(request.run)
        aborted = await self._store.abort_run(who.tenant, request.run)
        if aborted:
            metrics.ACTIONS_FINISHED.labels(phase="ABORTED").inc(aborted)
            event_log.run_aborted(who.tenant, request.run, aborted, request.reason)
        return pb.AbortRunResponse(aborted=aborted)

    async def AbortAction(
        self, request: pb.AbortActionRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.AbortActionResponse:
        who = principal()
        validation.run_name(request.run)
        if not request.names:
            raise invalid("names: give at least one action to abort")
        if len(request.names) > MAX_ABORT_NAMES:
            raise invalid(f"{len(request.names)} names in one AbortAction; the most is {MAX_ABORT_NAMES}")
        for i, name in enumerate(request.names):
            validation.action_name(name, f"names[{i}]")
        check_action_scope(who, request.run, None)
        child_of = who.action if who.role == "action" else None
        aborted = await self._store.abort_actions(who.tenant, request.run, list(request.names), child_of)
        if aborted:
            metrics.ACTIONS_FINISHED.labels(phase="ABORTED").inc(aborted)
            log.info(
                "%s aborted %d actions of run %s (from %s): %s",
                who.label,
                aborted,
                request.run,
                ", ".join(request.names[:5]),
                request.reason[:200],
            )
        return pb.AbortActionResponse(aborted=aborted)

    async def GetQuota(self, request: pb.GetQuotaRequest, context: aio.ServicerContext[Any, Any]) -> pb.Quota:
        who = principal()
        limits = await self._limits.effective(who.tenant)
        return pb.Quota(
            tenant=who.tenant,
            max_fanout=limits.max_fanout,
            max_concurrency=limits.max_concurrency,
            max_queued=limits.max_queued,
            max_payload_bytes=limits.max_payload_bytes,
            running=await self._store.running(who.tenant),
            queued=await self._store.queued(who.tenant),
            stored_bytes=max(0, await self._store.stored_bytes(who.tenant)),
            max_stored_bytes=limits.max_stored_bytes,
            retention_seconds=limits.retention_seconds,
        )

    async def ListRuns(
        self, request: pb.ListRunsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListRunsResponse:
        return await run_views.list_runs(self._listing, principal().tenant, request, self._links)

    async def ListActions(
        self, request: pb.ListActionsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListActionsResponse:
        who = principal()
        validation.run_name(request.run)
        check_action_scope(who, request.run, None)
        return await run_views.list_actions(self._listing, who.tenant, request)

    async def RecordTraces(
        self, request: pb.RecordTracesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.RecordTracesResponse:
        who = principal()
        limits = await self._own_record_limits(who, request.run, request.action)
        if any(len(record.output) > limits.max_payload_bytes for record in request.records):
            raise invalid(f"a traced call's output is over max_payload_bytes ({limits.max_payload_bytes})")
        records = list(request.records)
        await self._traces.record(
            who.tenant, request.run, request.action, who.attempt, records, limits.max_stored_bytes
        )
        return pb.RecordTracesResponse()

    async def ListTraces(
        self, request: pb.ListTracesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListTracesResponse:
        who = principal()
        if request.cursor and not request.cursor.isdigit():
            raise invalid("cursor: pass the next_cursor of the previous page")
        await self._readable_action(who, request.run, request.action)
        records, cursor = await self._traces.page(who.tenant, request.run, request.action, request.cursor)
        return pb.ListTracesResponse(records=records, next_cursor=cursor)

    async def PutReport(
        self, request: pb.PutReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.PutReportResponse:
        who = principal()
        limits = await self._own_record_limits(who, request.run, request.action)
        if len(request.html) > limits.max_payload_bytes:
            size, limit = len(request.html), limits.max_payload_bytes
            raise invalid(f"the report is {size} bytes, over max_payload_bytes ({limit})")
        page = request.html
        await self._reports.put(who.tenant, request.run, request.action, who.attempt, page, limits.max_stored_bytes)
        return pb.PutReportResponse()

    async def GetReport(
        self, request: pb.GetReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.GetReportResponse:
        who = principal()
        await self._readable_action(who, request.run, request.action)
        page = await self._reports.get(who.tenant, request.run, request.action)
        return pb.GetReportResponse(html=page or b"", kept=page is not None)

    async def _own_record_limits(self, who: Principal, run: str, action: str) -> Limits:
        """An action writing its own record (traced calls, report): it must be that action; its tenant's limits."""
        check_action_scope(who, run, None)  # another run's: not found, exactly like a missing one
        if action != who.action:
            raise denied(f"action {who.action!r} writes only its own records, not those of {action!r}")
        return await self._limits.effective(who.tenant)

    async def _readable_action(self, who: Principal, run: str, action: str) -> None:
        """The caller's tenant's action (or its own run's): NotFound otherwise, exactly like a missing one."""
        validation.run_name(run)
        validation.action_name(action)
        check_action_scope(who, run, None)
        await self._store.get_action(who.tenant, run, action)

    async def _run(self, tenant: str, run: str) -> pb.Run:
        return run_views.run_message(await self._listing.run_summary(tenant, run), self._links)
