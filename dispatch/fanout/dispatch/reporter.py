"""Batches phase reports into few messages, retrying while the server is away.

A batch goes as a message on the lease stream when the server takes reports
there (use_stream; answered on the stream by id), else as a Report call. If
the stream ends before the answer came, the batch is sent again, by whatever
way is there then.

A batch is what is ready, not what a timer collected: the reports made in
the turns of the event loop that made the first one (say, the RUNNING of
every action of one lease response), and then, while a call is in flight,
all that were made meanwhile. So one lone report goes out at once, and under
load each call carries more.

Each tenant has its own lane, and the lanes of different tenants send side
by side (at most MAX_CALLS_IN_FLIGHT calls at once), so a small tenant's
reports never queue behind the backlog of another tenant's huge fanout.
A lane whose calls in flight carry a backlog (PIPELINED_BELOW reports or
more) waits for their answer, and what is reported meanwhile goes in its next
call: under load each call carries more. A lane whose calls in flight are
small has no backlog to batch: its next report goes at once, in a call of its
own (up to MAX_CALLS_PER_LANE in flight). One call at a time made every
report of a tenant with a steady trickle of actions wait for the answer to
the call before it: under a large fanout on this machine, a small tenant's
actions showed RUNNING about 100 ms late (p50), or not at all. Calls in
flight side by side may be applied out of order, which the server allows
for: phases only move forward, so a RUNNING applied after its action's end
is ignored, as it would have been superseded in the lane.

A terminal report supersedes its action's RUNNING report while that one
waits in its lane: the action moves straight to its end, and the parent's
watch carries one event instead of two. (An action on a reusable worker that
ends in its first step, a no-op, has no RUNNING report at all: see pools.py.)

A RUNNING report made with `hold` (a one-shot action's: its own process or
container started) may wait up to RUNNING_HOLD_SECONDS in its lane for
company. One-shot actions start one at a time, as their processes come up,
so their RUNNING reports went one per call: each a call, a script and a
wake of the parent's watch, which made the one-worker path spend about a
sixth of its CPU on them. Held, those made within the hold go in one call,
any other report in the lane takes them along at once, and an action that
ends within the hold has none: its end supersedes it.

Reports are idempotent on the server (phases only move forward, one terminal
phase), so resending a batch after an error is safe. Until its call is
answered, a terminal report is named by unanswered(): the dispatcher renews
its action's lease meanwhile, or a report queued behind a busy server's
backlog would find the lease lapsed and its action running again elsewhere.
report_answered() also gives a future, resolved once the call was answered
(True) or rejected for good (False): the dispatcher keeps a backend action's
result on disk until then. The hot path (a pooled action's end) makes no
future: one per action cost more than the report itself.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import grpc

from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc

log = logging.getLogger(__name__)

# A tenant's lane has one call in flight, so this bounds one tenant's report rate: at 250 a run of a
# million actions took three times as long, and at 1,000 a fanout of 100,000 ran 5% slower than at
# 4,000 (its reports fell 13,000 behind). The server applies a call in short scripts (REPORT_CHUNK).
MAX_REPORTS_PER_CALL = 4000
# Far under the server's message cap (max_message_bytes, 256 MiB by default), past which it refuses
# a call for good; a tenant's results may each be up to its max_payload_bytes (1 MiB by default).
MAX_BYTES_PER_CALL = 16 << 20
MAX_CALLS_IN_FLIGHT = 8
# A lane's calls in flight carrying fewer reports than this in all are no backlog: its next call
# need not wait for their answer (see the module doc). A big fanout's calls carry hundreds.
PIPELINED_BELOW = 64
MAX_CALLS_PER_LANE = 4
# How long a held RUNNING report may wait for company: short beside the start of a process or a
# container it follows (tens of milliseconds to seconds), long beside the one-shot path's rate of
# starts (a hundred or more a second here), so a call carries several.
RUNNING_HOLD_SECONDS = 0.05
# A batch sent on the lease stream whose answer takes longer than a Report call may is sent again.
ANSWER_SECONDS = 30.0
# Statuses after which a batch is sent again later; after any other it is dropped (and logged).
RETRIED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
# The lease stream a batch went on ended before its answer came.
_LOST = (grpc.StatusCode.UNAVAILABLE, "the lease stream ended before the answer came")

_Entry = tuple[dpb.PhaseReport, "asyncio.Future[bool] | None"]
_Pending = deque[_Entry]
ReportKey = tuple[str, str, str, int]  # tenant, run, action, attempt
# One try at sending a batch, begun: the answer to come on the lease stream, or a Report call.
_Started = Awaitable["dpb.ReportAnswer | dpb.ReportResponse | None"]


class ReportStream:
    """A lease stream that takes reports: each batch a message on it, its answer matched by id."""

    def __init__(self, send: Callable[[dpb.LeaseRequest], None]) -> None:
        self._send = send
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dpb.ReportAnswer | None]] = {}

    def send(self, reports: list[dpb.PhaseReport]) -> asyncio.Future[dpb.ReportAnswer | None]:
        """Send a batch; the future gives its answer, or None if the stream ended first."""
        batch_id = next(self._ids)
        answer: asyncio.Future[dpb.ReportAnswer | None] = asyncio.get_running_loop().create_future()
        self._waiting[batch_id] = answer
        self._send(dpb.LeaseRequest(report=dpb.StreamedReport(id=batch_id, reports=reports)))
        return answer

    def answered(self, answers: Iterable[dpb.ReportAnswer]) -> None:
        for answer in answers:
            waiting = self._waiting.pop(answer.id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(answer)

    def close(self) -> None:
        """The stream ended: the batches it did not answer get None."""
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_result(None)


class Reporter:
    def __init__(
        self,
        stub: dispatch_pb2_grpc.DispatchServiceStub,
        metadata: tuple[tuple[str, str], ...],
        settled: Callable[[list[dpb.PhaseReport]], None] | None = None,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        # Told of the terminal reports of each call once it ended (answered, or refused for good).
        self._settled = settled
        self._stream: ReportStream | None = None  # the lease stream batches go on, when it takes them
        self._pending: dict[str, _Pending] = {}  # by tenant, in the order reported
        self._lanes: dict[str, asyncio.Task[None]] = {}  # the tenants whose reports are being sent
        self._calls = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)
        self._sending: dict[int, list[_Entry]] = {}  # the batches of the calls in flight, by id
        self._started = False
        self._unsent_running: set[ReportKey] = set()  # RUNNING reports still in their lane
        self._superseded: set[ReportKey] = set()  # ... of which a terminal report came after
        self._held: set[ReportKey] = set()  # ... that were made with `hold`
        self._urgent: dict[str, int] = {}  # by tenant: reports in the lane that may not wait
        self._held_count: dict[str, int] = {}  # by tenant: held RUNNING reports in the lane
        self._hold_until: dict[str, float] = {}  # by tenant: when its oldest held report goes (loop time)
        # Lanes waiting out a hold or for an answer, woken by an urgent report.
        self._wakers: dict[str, asyncio.Future[None]] = {}

    def start(self) -> None:
        """Send from now on: what was reported before goes out at once."""
        self._started = True
        for tenant in self._pending:
            self._open_lane(tenant)

    def use_stream(self, stream: ReportStream | None) -> None:
        """Send the next batches on this lease stream (None: by Report calls)."""
        self._stream = stream

    def report(self, report: dpb.PhaseReport, hold: bool = False) -> None:
        """Send `report` (in a batch, in its tenant's lane); a RUNNING report with `hold` may wait
        up to RUNNING_HOLD_SECONDS for company (see the module doc)."""
        self._add(report, None, hold)

    def report_answered(self, report: dpb.PhaseReport) -> asyncio.Future[bool]:
        """Send `report`; the future says once its call was answered (True) or refused for good (False)."""
        sent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._add(report, sent)
        return sent

    def unanswered(self) -> Iterator[dpb.PhaseReport]:
        """The terminal reports not answered yet: waiting in their lanes, or in a call in flight."""
        for entries in itertools.chain(self._pending.values(), self._sending.values()):
            for report, _ in entries:
                if report.phase != pb.RUNNING:
                    yield report

    def _add(self, report: dpb.PhaseReport, sent: asyncio.Future[bool] | None, hold: bool = False) -> None:
        key, tenant = _key(report), report.tenant
        if report.phase == pb.RUNNING:
            self._unsent_running.add(key)
        elif key in self._unsent_running:
            self._unsent_running.discard(key)
            self._superseded.add(key)
        if hold and report.phase == pb.RUNNING:
            self._held.add(key)
            self._held_count[tenant] = self._held_count.get(tenant, 0) + 1
            if tenant not in self._hold_until:
                self._hold_until[tenant] = asyncio.get_running_loop().time() + RUNNING_HOLD_SECONDS
        else:
            self._urgent[tenant] = self._urgent.get(tenant, 0) + 1
            if self._wakers and (waker := self._wakers.get(tenant)) is not None:
                _wake(waker)  # it goes now, and takes the held reports along
        pending = self._pending.get(tenant)
        if pending is None:
            pending = self._pending[tenant] = deque()
        pending.append((report, sent))
        if self._started:
            self._open_lane(tenant)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every report was sent (or the timeout passed)."""
        if self._lanes:
            await asyncio.wait(list(self._lanes.values()), timeout=timeout)
        left = sum(len(pending) for pending in self._pending.values())
        if left:
            log.warning("%d reports not sent before shutdown", left)

    def _open_lane(self, tenant: str) -> None:
        if tenant not in self._lanes:
            self._lanes[tenant] = asyncio.create_task(self._lane(tenant, len(self._pending[tenant])))

    async def _lane(self, tenant: str, opened_with: int) -> None:
        pending = self._pending[tenant]
        calls: dict[asyncio.Task[None], int] = {}  # this lane's calls in flight: the reports each carries
        # The turn that opened the lane ends before the lane's first step: it is the first turn
        # waited for. A lone report then goes out in that step, not a turn later.
        ready = opened_with
        try:
            while _prune(calls) or pending:
                if not pending or not _may_call(calls):
                    await self._answer_or_report(tenant, calls, wake_on_report=_may_call(calls))
                    ready = -1  # what came meanwhile: wait for a turn that adds nothing
                    continue
                if not self._urgent.get(tenant):
                    await self._hold(tenant)
                    ready = len(pending)  # the hold was the wait: what is here goes
                # Let the turns of the loop that are reporting end: until one reports nothing more.
                while len(pending) < MAX_REPORTS_PER_CALL and len(pending) != ready:
                    ready = len(pending)
                    await asyncio.sleep(0)
                await self._calls.acquire()
                # Taken once the call may go: what came while it waited for its turn rides along.
                batch = self._take(tenant, pending)
                if not batch:
                    self._calls.release()
                    continue
                self._call(batch, calls)
                ready = -1
        finally:
            for call in calls:  # stopped: the calls in flight stop too
                call.cancel()
            # No await since the loop saw `pending` empty: a report made now opens a new lane.
            del self._lanes[tenant]
            if not pending:
                del self._pending[tenant]

    def _call(self, batch: list[_Entry], calls: dict[asyncio.Task[None], int]) -> None:
        """Send `batch`, begun now: a lone report leaves in this turn of the loop, not in a task's first
        step. The call holds its place among MAX_CALLS_IN_FLIGHT (taken by the lane) until it ends."""
        self._sending[id(batch)] = batch
        reports = [report for report, _ in batch]
        calls[call := asyncio.create_task(self._see_through(batch, reports, self._begin(reports)))] = len(batch)
        # A callback, not a `finally`: it runs even for a call cancelled before its first step.
        call.add_done_callback(functools.partial(self._ended, id(batch)))

    def _ended(self, batch_id: int, _: asyncio.Task[None]) -> None:
        batch = self._sending.pop(batch_id)
        self._calls.release()
        if self._settled is not None:
            self._settled([report for report, _ in batch if report.phase != pb.RUNNING])

    async def _see_through(self, batch: list[_Entry], reports: list[dpb.PhaseReport], started: _Started) -> None:
        accepted = await self._send(reports, started)
        for _, sent in batch:
            if sent is not None and not sent.done():
                sent.set_result(accepted)

    async def _answer_or_report(self, tenant: str, calls: dict[asyncio.Task[None], int], wake_on_report: bool) -> None:
        """Wait until one of the lane's calls is answered, or (if another may go) a report comes that may not wait."""
        if wake_on_report:
            await self._until_urgent(tenant, calls)
        else:
            await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)

    async def _hold(self, tenant: str) -> None:
        """Wait until the tenant's oldest held report is due, or an urgent report comes."""
        left = self._hold_until.get(tenant, 0.0) - asyncio.get_running_loop().time()
        if left > 0:
            await self._until_urgent(tenant, timeout=left)

    async def _until_urgent(
        self, tenant: str, others: Iterable[asyncio.Future[Any]] = (), timeout: float | None = None
    ) -> None:
        """Wait until an urgent report comes to the tenant's lane (_add wakes it), one of `others` ends,
        or `timeout` passes."""
        waker = self._wakers[tenant] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait([*others, waker], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            del self._wakers[tenant]
            waker.cancel()

    def _take(self, tenant: str, pending: _Pending) -> list[_Entry]:
        """The next call's reports (at most MAX_REPORTS_PER_CALL and about MAX_BYTES_PER_CALL), without
        the RUNNING reports their action's end superseded."""
        batch: list[_Entry] = []
        size = urgent = held = 0
        while pending and len(batch) < MAX_REPORTS_PER_CALL:
            cost = pending[0][0].ByteSize()
            if batch and size + cost > MAX_BYTES_PER_CALL:
                break  # the next call takes it (one report alone always goes)
            report, sent = pending.popleft()
            if report.phase != pb.RUNNING:
                urgent += 1
            else:
                key = _key(report)
                self._unsent_running.discard(key)
                if key in self._held:
                    self._held.discard(key)
                    held += 1
                else:
                    urgent += 1
                if key in self._superseded:
                    self._superseded.discard(key)
                    if sent is not None:
                        sent.set_result(True)  # its end, in this lane behind it, says more
                    continue
            batch.append((report, sent))
            size += cost
        _take_from(self._urgent, tenant, urgent)
        if _take_from(self._held_count, tenant, held) == 0:
            self._hold_until.pop(tenant, None)  # the next held report starts a new hold
        return batch

    async def _send(self, batch: list[dpb.PhaseReport], started: _Started | None = None) -> bool:
        """Send `batch` until it went through or was refused for good; `started`: its first try, begun."""
        delay = 0.1
        while True:
            failure = await _failure(started if started is not None else self._begin(batch))
            started = None
            if failure is None:
                return True
            if failure is _LOST:
                continue  # at once, by whatever way there is now: the stream is gone from self._stream
            code, details = failure
            if code not in RETRIED:
                log.error("report rejected (%s: %s); dropping %d reports", code.name, details, len(batch))
                return False
            log.warning("control plane unavailable (%s); retrying %d reports in %.1fs", details, len(batch), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _begin(self, batch: list[dpb.PhaseReport]) -> _Started:
        """One try at sending `batch`, begun now: a message on the lease stream (its answer to come),
        or a Report call."""
        if self._stream is not None:
            return self._stream.send(batch)
        return self._stub.Report(dpb.ReportRequest(reports=batch), metadata=self._metadata, timeout=ANSWER_SECONDS)

    async def stop(self) -> None:
        lanes = list(self._lanes.values())
        for lane in lanes:
            lane.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)


async def _failure(started: _Started) -> tuple[grpc.StatusCode, str] | None:
    """How a begun try at sending a batch failed, or None once it went through."""
    try:
        answer = await asyncio.wait_for(started, ANSWER_SECONDS)
    except TimeoutError:
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer in {ANSWER_SECONDS:.0f}s"
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    if answer is None:
        return _LOST
    if not isinstance(answer, dpb.ReportAnswer) or not answer.error_code:  # a Report call's response, or no error
        return None
    return _STATUS_CODES.get(answer.error_code, grpc.StatusCode.UNKNOWN), answer.error_details


def _may_call(calls: dict[asyncio.Task[None], int]) -> bool:
    """Whether a lane with these calls in flight may send another now."""
    return not calls or (len(calls) < MAX_CALLS_PER_LANE and sum(calls.values()) < PIPELINED_BELOW)


def _prune(calls: dict[asyncio.Task[None], int]) -> int:
    """Forget the calls that ended (one that failed, a bug since _send retries what may be retried, ends
    the lane); how many are still in flight."""
    for call in [call for call in calls if call.done()]:
        del calls[call]
        call.result()
    return len(calls)


def _take_from(counts: dict[str, int], tenant: str, taken: int) -> int:
    """Lower a tenant's count (gone at 0, so that tenants come and go); what is left."""
    left = counts.get(tenant, 0) - taken
    if left:
        counts[tenant] = left
    else:
        counts.pop(tenant, None)
    return left


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


def _key(report: dpb.PhaseReport) -> ReportKey:
    return (report.tenant, report.run, report.name, report.attempt)
