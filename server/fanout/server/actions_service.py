"""fanout.v1.ActionService: runs, batches of children, watches, reads."""

from __future__ import annotations

import logging
import re
import secrets
import string
from collections.abc import AsyncIterator, Iterator
from typing import Any

from grpc import aio

from fanout.quota import phases
from fanout.quota.actions import ActionStore, ChildState, EventsTrimmed
from fanout.quota.admission import Batch
from fanout.quota.errors import QuotaExceeded
from fanout.quota.limits import LimitStore
from fanout.quota.tokens import Principal
from fanout.server import metrics, validation
from fanout.server.auth import principal
from fanout.server.settings import Settings
from fanout.server.status import denied, invalid, not_found
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc

log = logging.getLogger(__name__)

ROOT_ACTION = "root"
# A watch's blocking read waits this long for a change; the Redis socket timeout
# (app.connect_redis) is derived from it and stays longer. Each read that comes
# back empty sends a heartbeat, so a quiet watch shows it is alive this often.
WATCH_BLOCK_MS = 2_000
# A batched watch event holds changes of about this many bytes at most (results may be big),
# well under the default 4 MiB a gRPC client accepts.
WATCH_EVENT_BYTES = 1 << 20
_RUN_ALPHABET = string.ascii_lowercase + string.digits


def new_run_name() -> str:
    return "r" + "".join(secrets.choice(_RUN_ALPHABET) for _ in range(11))


def child_status(run: str, parent: str, child: ChildState) -> pb.ActionStatus:
    status = pb.ActionStatus(run=run, name=child.name, parent=parent, phase=child.phase, attempt=child.attempt)
    if child.result:
        status.result.ParseFromString(child.result)
    return status


def _watch_events(request: pb.WatchChildrenRequest, changes: list[tuple[str, ChildState]]) -> Iterator[pb.WatchEvent]:
    """Changes as watch events, each with the cursor after it: batched (one event per
    WATCH_EVENT_BYTES of changes) when the watcher asked for batches, else one event per change."""
    if not request.batched:
        for cursor, child in changes:
            yield pb.WatchEvent(update=child_status(request.run, request.parent, child), cursor=cursor)
        return
    event, size = pb.WatchEvent(), 0
    for cursor, child in changes:
        cost = len(child.result) + len(child.name) + len(request.run) + len(request.parent) + 16
        if size and size + cost > WATCH_EVENT_BYTES:
            yield event
            event, size = pb.WatchEvent(), 0
        status = event.updates.add(
            run=request.run, name=child.name, parent=request.parent, phase=child.phase, attempt=child.attempt
        )
        if child.result:
            status.result.ParseFromString(child.result)
        event.cursor, size = cursor, size + cost
    if size:
        yield event


class ActionService(actions_pb2_grpc.ActionServiceServicer):
    def __init__(self, settings: Settings, store: ActionStore, limits: LimitStore) -> None:
        self._settings = settings
        self._store = store
        self._limits = limits

    async def CreateRun(
        self, request: pb.CreateRunRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.CreateRunResponse:
        who = principal()
        run = validation.run_name(request.run_name) if request.run_name else new_run_name()
        root = pb.ActionSpec()
        root.CopyFrom(request.root)
        root.name = root.name or ROOT_ACTION
        limits = await self._limits.effective(who.tenant)
        validation.spec(root, limits.max_payload_bytes)
        created = await self._store.create_run(who.tenant, run, root.name, root.SerializeToString())
        if created:
            metrics.ADMISSION_DECISIONS.labels(tenant=metrics.tenant_label(who.tenant), decision="admitted").inc()
            metrics.ACTIONS_ADMITTED.labels(tenant=metrics.tenant_label(who.tenant)).inc()
        return pb.CreateRunResponse(run=await self._run(who.tenant, run))

    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.SubmitBatchResponse:
        who = principal()
        validation.run_name(request.run)
        validation.action_name(request.parent, "parent")
        _check_action_scope(who, request.run, request.parent)
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
            metrics.ADMISSION_DECISIONS.labels(
                tenant=metrics.tenant_label(who.tenant), decision=f"rejected_{exc.limit_name}"
            ).inc()
            raise
        if request.dry_run:
            metrics.ADMISSION_DECISIONS.labels(tenant=metrics.tenant_label(who.tenant), decision="dry_run").inc()
        else:
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
        _check_action_scope(who, request.run, None)
        if not await self._store.exists(who.tenant, request.run):
            raise not_found(f"run {request.run!r} not found")
        cursor = request.cursor
        if cursor and not _valid_cursor(cursor):
            raise invalid(f"cursor {cursor[:40]!r} is not a cursor this server handed out")
        if not cursor:
            async for event in self._replay(who.tenant, request):
                yield event
                cursor = event.cursor
        while True:
            try:
                changes = await self._store.events(who.tenant, request.run, request.parent, cursor, WATCH_BLOCK_MS)
            except EventsTrimmed:
                # The watch fell behind its parent's capped event stream: what was trimmed may
                # hold changes it never saw, so it gets current state again (repeats are harmless).
                async for event in self._replay(who.tenant, request):
                    yield event
                    cursor = event.cursor
                continue
            if not changes:  # a heartbeat: neither update nor replay_done, only the cursor
                yield pb.WatchEvent(cursor=cursor)
                continue
            for event in _watch_events(request, changes):
                yield event
            cursor = changes[-1][0]

    async def _replay(self, tenant: str, request: pb.WatchChildrenRequest) -> AsyncIterator[pb.WatchEvent]:
        """Current state of the children, then replay_done; every event carries the cursor to follow from.

        The replay pages through the children, a short script per page (a parent may have
        millions); live events follow from the first page's cursor, so none is missed.
        """
        page = await self._store.snapshot(tenant, request.run, request.parent)
        cursor = page.cursor
        while True:
            for event in _watch_events(request, [(cursor, child) for child in page.children]):
                yield event
            if page.next_offset is None:
                break
            page = await self._store.snapshot(tenant, request.run, request.parent, page.next_offset)
        yield pb.WatchEvent(replay_done=pb.ReplayDone(), cursor=cursor)

    async def GetRun(self, request: pb.GetRunRequest, context: aio.ServicerContext[Any, Any]) -> pb.Run:
        who = principal()
        validation.run_name(request.run)
        _check_action_scope(who, request.run, None)
        return await self._run(who.tenant, request.run)

    async def GetAction(self, request: pb.GetActionRequest, context: aio.ServicerContext[Any, Any]) -> pb.ActionStatus:
        who = principal()
        validation.run_name(request.run)
        validation.action_name(request.name)
        _check_action_scope(who, request.run, None)
        spec_bytes, parent, phase, attempt, result = await self._store.get_action(who.tenant, request.run, request.name)
        spec = pb.ActionSpec.FromString(spec_bytes)
        status = pb.ActionStatus(
            run=request.run,
            name=request.name,
            parent=parent,
            task_name=spec.task_name,
            phase=phase,
            attempt=attempt,
        )
        if phases.is_terminal(phase) and result:
            status.result.ParseFromString(result)
        return status

    async def AbortRun(
        self, request: pb.AbortRunRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.AbortRunResponse:
        who = principal()
        validation.run_name(request.run)
        aborted = await self._store.abort_run(who.tenant, request.run)
        if aborted:
            metrics.ACTIONS_FINISHED.labels(phase="ABORTED").inc(aborted)
            log.info("%s aborted run %s (%d actions): %s", who.tenant, request.run, aborted, request.reason[:200])
        return pb.AbortRunResponse(aborted=aborted)

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

    async def _run(self, tenant: str, run: str) -> pb.Run:
        info = await self._store.get_run(tenant, run)
        return pb.Run(
            name=info.name,
            root=info.root,
            phase=info.phase,
            action_count=info.action_count,
            created_at=info.created_at,
        )


def _check_action_scope(who: Principal, run: str, parent: str | None) -> None:
    """An action token reaches its own run only, and submits only its own children."""
    if who.role != "action":
        return
    if run != who.run:
        raise not_found(f"run {run!r} not found")
    if parent is not None and parent != who.action:
        raise denied(f"action {who.action!r} may submit only its own children, not children of {parent!r}")


# A Redis stream id: two unsigned 64-bit numbers in ASCII digits. str.isdigit() would let
# '١٢' or '²' through, and Redis would answer an error the client cannot act on.
_CURSOR_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_U64_MAX = (1 << 64) - 1


def _valid_cursor(cursor: str) -> bool:
    match = _CURSOR_RE.fullmatch(cursor)  # not match(): "$" would accept a trailing newline
    return match is not None and all(int(part) <= _U64_MAX for part in match.groups())
