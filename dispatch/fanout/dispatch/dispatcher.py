"""The dispatcher loop: lease on a stream, run in a backend, report in batches.

It talks to the control plane over gRPC only. Capacity is how many actions
it holds at once; every finished action gives one credit back once the
control plane answered the report of its end (so leasing cannot outrun a busy
server's recording of results), and so does a parent that the server says is
waiting on its children (it holds no slot, so nested fanouts cannot fill the
dispatcher and deadlock). Leases of
running actions are renewed by heartbeat; the answer also names actions to
stop (aborted, or leased again elsewhere). If this process dies, the server
reclaims its leases and another dispatcher runs the actions again; but the
actions that had finished are reported by the next dispatcher on the same
work place (backend.recover) before it leases anything, so they do not run
twice. A backend keeps an outcome until its report was answered.

Actions whose environment has a ReusePolicy run in pools of reusable
workers instead (pools.py); their results live in memory only, so after a
crash of this process (or of a worker) they run again once their leases
lapse: at-least-once, like any lost lease. That is a big fanout's hot path,
so such an action costs no asyncio task here: it is a pool's job, whose end
is a callback. The backend's actions each get a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc

from fanout.channel import async_channel
from fanout.config import ClientConfig
from fanout.dispatch import metrics as dispatch_metrics
from fanout.dispatch.backend import Backend, Outcome, failure
from fanout.dispatch.pools import Pools, WorkerFactory, WorkerLost, WorkerProcess, reusable
from fanout.dispatch.reporter import Reporter, ReportKey, ReportStream
from fanout.dispatch.sandbox import Sandbox
from fanout.dispatch.starts import Starts
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc

log = logging.getLogger(__name__)

# Heartbeats renew leases and learn which parents wait on children; often
# enough that a waiting parent frees its capacity within about a second.
HEARTBEAT_SECONDS = 1.0
# A heartbeat leaves out the leases taken since the one before whose actions have not said they
# run, when the heartbeat after it still comes within this share of a lease period: such a lease
# has most of its period left, and such an action waits on no children yet. In a big fanout that
# is nearly every lease held (no-ops end in their first step, within a tick of their lease), and
# renewing them cost the dispatcher, the server and Redis a lease's worth of work each.
FRESH_SKIP_SHARE = 1 / 3
# Reconnecting a broken lease stream: the first wait, the longest, and how
# long a stream must have lasted for its break to start the waits afresh.
FIRST_RECONNECT_SECONDS = 0.2
MAX_RECONNECT_SECONDS = 5.0
STABLE_STREAM_SECONDS = 1.0
# How long a starting dispatcher waits for the reports of recovered results
# before it leases: less than a lease, so the old leases are still valid.
RECOVERY_REPORT_SECONDS = 5.0
# Freed capacity goes back to the server at once while it holds less credit for us than this, else
# in batches of CREDIT_BATCH: it leases at most a chunk (256) per tenant per round, so while it holds
# two chunks' worth, more credit changes nothing it does, and each credit message costs both sides.
CREDIT_SLACK = 512
CREDIT_BATCH = 256
# Leased actions a dispatcher holds at once: enough for a few full pools of
# reusable workers (their slots are asyncio tasks); processes are bounded by the backend.
DEFAULT_CAPACITY = 1024
# What a stopped action's work is released as (never reported: the server ended it).
# The shortest wait before a retry: a report reads 0 as "no retry".
MIN_RETRY_SECONDS = 0.001
STOPPED = failure("Stopped", "stopped by the control plane", pb.ABORTED)


class Running(Protocol):
    """A leased action being run: a backend's asyncio task, or a pool's job."""

    def done(self) -> bool: ...

    def cancel(self) -> Any: ...


class Dispatcher:
    def __init__(
        self,
        config: ClientConfig,
        backend: Backend,
        capacity: int = DEFAULT_CAPACITY,
        action_endpoint: str = "",
        worker_logs: Path | None = None,
        new_worker: WorkerFactory = WorkerProcess,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.config = config.require()
        self.backend = backend
        # Leased actions held at once: running, or queued here for a pool's free slot.
        self.capacity = capacity
        # What tenant code may do here; the backend is given the same policy by whoever builds both.
        self.sandbox = sandbox or Sandbox()
        # Reusable workers as local processes, or as the container backend's containers.
        self.pools = Pools(self.config, worker_logs, new_worker, self.sandbox)
        # Where actions reach the control plane; the same address unless a
        # container network needs another one.
        self.action_endpoint = action_endpoint or config.endpoint
        self.id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._metadata = (("authorization", f"Bearer {config.token}"),)
        self._running: dict[str, tuple[dpb.LeasedAction, Running]] = {}
        # Leases taken since the last heartbeat whose actions have not said they run (see FRESH_SKIP_SHARE).
        self._fresh: set[str] = set()
        # Leased, and waiting for a turn of the loop to start (see starts.py).
        self._starts = Starts(self._start)
        self._reporter: Reporter | None = None
        self._waiting: set[str] = set()
        # Ended here, their end reported but not answered yet: each still holds its slot (see _ended).
        self._owing: set[ReportKey] = set()
        self._images_noted: set[str] = set()
        # Messages for the current lease stream; None ends the stream's request side.
        self._outbox: asyncio.Queue[dpb.LeaseRequest | None] = asyncio.Queue()
        self._credit = 0  # given back, not yet sent
        self._credit_scheduled = False
        self._granted = 0  # credit the server holds for us: the hello's, plus what we sent, less what it leased
        self._lease_seconds = 15.0
        self._stopping = asyncio.Event()
        self._releases: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Serve until stop(); reconnects with backoff when the stream breaks."""
        channel = async_channel(self.config)
        stub = dispatch_pb2_grpc.DispatchServiceStub(channel)
        reporter = self._reporter = Reporter(stub, self._metadata, settled=self._settled)
        reporter.start()
        heartbeat = asyncio.create_task(self._heartbeat())
        loop = asyncio.get_running_loop()
        delay = FIRST_RECONNECT_SECONDS
        try:
            await self._recover(reporter)
            while not self._stopping.is_set():
                opened = loop.time()
                try:
                    await self._lease(stub)
                    delay = FIRST_RECONNECT_SECONDS
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                        raise PermissionError(f"the control plane refused this dispatcher: {exc.details()}") from None
                    if self._stopping.is_set():
                        break
                    if loop.time() - opened >= STABLE_STREAM_SECONDS:
                        delay = FIRST_RECONNECT_SECONDS  # a stream that worked: this break is a new incident
                    log.warning("lease stream broke (%s); reconnecting in %.1fs", code.name, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                # Never wait so long between tries that the running actions' leases lapse.
                delay = min(delay * 2, MAX_RECONNECT_SECONDS, self._lease_seconds / 4)
        finally:
            heartbeat.cancel()
            # Cancel first, then stop the backend: a process killed by the
            # shutdown must not be reported as a failure. Unreported actions
            # keep their leases, which expire, and run again elsewhere or
            # after a restart.
            self._starts.clear()
            running = [run for _, run in self._running.values()]
            for run in running:
                run.cancel()
            await asyncio.gather(*(r for r in running if isinstance(r, asyncio.Task)), return_exceptions=True)
            await reporter.drain()
            # Outcomes whose report got no answer stay on disk for the next start.
            if self._releases:
                await asyncio.wait(self._releases, timeout=5)
            for release in self._releases:
                release.cancel()
            await asyncio.gather(*self._releases, return_exceptions=True)
            await self.pools.shutdown()
            await self.backend.shutdown()
            await reporter.stop()
            await channel.close()

    async def _recover(self, reporter: Reporter) -> None:
        """Report what an earlier dispatcher finished here but never reported, before leasing."""
        recovered = await self.backend.recover()
        if not recovered:
            return
        log.info("reporting %d results an earlier dispatcher left unreported", len(recovered))
        sent = [self._finish(action, outcome, reporter) for action, outcome in recovered]
        await asyncio.wait([s for s in sent if s is not None], timeout=RECOVERY_REPORT_SECONDS)

    def stop(self) -> None:
        self._stopping.set()

    async def _lease(self, stub: dispatch_pb2_grpc.DispatchServiceStub) -> None:
        free = self.capacity - (len(self._running) + len(self._starts) + len(self._owing) - len(self._waiting))
        self._credit = 0  # counted in `free`: the new stream's hello carries it
        self._granted = max(free, 0)
        # Credit given back on an old stream is lost with it; start each stream afresh.
        outbox: asyncio.Queue[dpb.LeaseRequest | None] = asyncio.Queue()
        self._outbox = outbox
        outbox.put_nowait(dpb.LeaseRequest(hello=dpb.Hello(dispatcher_id=self.id, capacity=max(free, 0))))
        if self._holds_leases():
            # Renew at once: the leases went unrenewed while there was no stream.
            outbox.put_nowait(self._heartbeat_request())
        reports = ReportStream(outbox.put_nowait)
        call = stub.Lease(self._requests(outbox), metadata=self._metadata)
        reading = asyncio.create_task(self._read_leases(call, reports))
        stopper = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({reading, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():  # stopping
                call.cancel()
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                return
            reading.result()  # the stream's end: its error if it broke
        finally:
            stopper.cancel()
            if self._reporter is not None:
                self._reporter.use_stream(None)  # Report calls until the next stream takes reports
            reports.close()  # what it did not answer is sent again
            outbox.put_nowait(None)  # let the request generator finish instead of hanging on the queue

    async def _read_leases(
        self, call: grpc.aio.StreamStreamCall[dpb.LeaseRequest, dpb.LeaseResponse], reports: ReportStream
    ) -> None:
        """Take each response off the stream as it comes; its actions wait for their start in self._starts.

        Read as fast as they come, not one after the other's start: a small tenant's lease,
        behind a big tenant's responses on the stream, is read within a few turns of the loop
        and starts in the next one (starts.py).
        """
        async for response in call:
            if response.takes_reports and self._reporter is not None:
                self._reporter.use_stream(reports)  # reports go on this stream from now on
            if response.answers:
                reports.answered(response.answers)
            self._lease_seconds = response.lease_seconds or self._lease_seconds
            self._on_heartbeat_answer(response)
            self.took(response.actions)
            self._granted -= len(response.actions)
            if self._credit and self._granted < CREDIT_SLACK:
                self._schedule_credit()  # what was held back is wanted now

    def took(self, actions: Sequence[dpb.LeasedAction]) -> None:
        """Hold newly leased actions: they start in the next turns of the loop (starts.py)."""
        self._fresh.update(map(_ref, actions))
        self._starts.add(actions)

    def said_running(self, action: dpb.LeasedAction) -> None:
        """Its action runs past its first step: heartbeats name its lease from now on."""
        self._fresh.discard(_ref(action))

    def _start(self, action: dpb.LeasedAction) -> None:
        reporter = self._reporter
        assert reporter is not None
        if action.spec.image and not self.backend.runs_images and action.spec.image not in self._images_noted:
            self._images_noted.add(action.spec.image)  # said once per image, not per action
            log.info("image %s is not used: this backend runs tasks in the dispatcher's Python", action.spec.image)
        if reusable(action.spec) and not self.sandbox.refusal(action.spec):
            self._submit_to_pool(action, reporter)
        else:
            self._running[_ref(action)] = (action, asyncio.create_task(self._execute(action, reporter)))

    def _submit_to_pool(self, action: dpb.LeasedAction, reporter: Reporter) -> None:
        key, backend, launched = _ref(action), dispatch_metrics.backend_name(self.backend, True), time.monotonic()

        def started() -> None:
            dispatch_metrics.started(action, backend)

        def running() -> None:
            self.said_running(action)
            reporter.report(_report(action, pb.RUNNING))

        def done(outcome: Outcome | WorkerLost) -> None:
            if isinstance(outcome, WorkerLost):
                # No report: the lease lapses and the control plane runs it again.
                self._ended(key)
                lost = "%s is lost with its worker (%s); it runs again after its lease"
                log.warning(lost, key, outcome, extra=_fields(action))
                return
            self._ended(key, reported=action)
            dispatch_metrics.finished(outcome, backend, time.monotonic() - launched)
            self._finish(action, outcome, reporter, keeps_work=False)  # a pool keeps nothing once the outcome is here

        try:
            # RUNNING once the worker says it runs on: a no-op never shows it (see pools.py).
            job = self.pools.submit(action, self.action_endpoint, started, done, running)
        except Exception as exc:  # a pool bug fails the action, not the dispatcher
            log.exception("the pool failed on %s", key, extra=_fields(action))
            done(failure("BackendError", f"{type(exc).__name__}: {exc}"))
            return
        if not job.done():
            self._running[key] = (action, job)

    @staticmethod
    async def _requests(outbox: asyncio.Queue[dpb.LeaseRequest | None]) -> AsyncIterator[dpb.LeaseRequest]:
        while (message := await outbox.get()) is not None:
            yield message

    def _on_heartbeat_answer(self, response: dpb.LeaseResponse) -> None:
        for ref in response.waiting:
            key = _key(ref.tenant, ref.run, ref.name)
            entry = self._running.get(key)
            if entry is not None and key not in self._waiting:
                self._waiting.add(key)
                self._give_credit()
                if reusable(entry[0].spec):
                    self.pools.waiting(entry[0])
                else:
                    self.backend.waiting(entry[0])
        for ref in response.cancelled:
            if self._starts.remove(ref.tenant, (ref.run, ref.name, ref.attempt)) is not None:
                self._give_credit()  # never started: the control plane has its end, and it holds no slot
                continue
            key = _key(ref.tenant, ref.run, ref.name)
            entry = self._running.get(key)
            if entry is not None and entry[0].attempt == ref.attempt and not entry[1].done():
                log.info("stopping %s: aborted, finished or leased elsewhere", key, extra=_fields(entry[0]))
                entry[1].cancel()
                if isinstance(entry[1], asyncio.Task):
                    # The control plane has its end already: keep no more of its work than of a failure's.
                    self._release_after(entry[0], STOPPED, entry[1])
                else:
                    self._ended(key)  # a pool's job ends unreported: no task's `finally` does this

    def _give_credit(self) -> None:
        self._credit += 1
        if self._granted < CREDIT_SLACK or self._credit >= CREDIT_BATCH:
            self._schedule_credit()

    def _schedule_credit(self) -> None:
        # Credit freed in one turn of the loop goes out as one message, not one per action.
        if not self._credit_scheduled:
            self._credit_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_credit)

    def _send_credit(self) -> None:
        self._credit_scheduled = False
        credit, self._credit = self._credit, 0
        if credit and not self._stopping.is_set():
            self._granted += credit
            self._outbox.put_nowait(dpb.LeaseRequest(credit=credit))

    async def _execute(self, action: dpb.LeasedAction, reporter: Reporter) -> None:
        """Run an action in the backend (a process or container of its own), or refuse its spec."""

        def started() -> None:
            # Held: one-shot actions start one by one, and their RUNNING reports are worth a call together.
            self.said_running(action)
            reporter.report(_report(action, pb.RUNNING), hold=True)
            dispatch_metrics.started(action, backend)

        key = _ref(action)
        backend, launched = dispatch_metrics.backend_name(self.backend, False), time.monotonic()
        reported: dpb.LeasedAction | None = None
        try:
            try:
                if refusal := self.sandbox.refusal(action.spec):
                    outcome = failure("UntrustedSpec", refusal, non_recoverable=True)
                else:
                    outcome = await self.backend.run(action, self.action_endpoint, started)
            except asyncio.CancelledError:
                # Shutting down (the lease expires and the action runs again
                # elsewhere) or told to stop (the server already has its end).
                raise
            except Exception as exc:  # a backend bug fails the action, not the dispatcher
                log.exception("backend failed on %s", key, extra=_fields(action))
                outcome = failure("BackendError", f"{type(exc).__name__}: {exc}")
            dispatch_metrics.finished(outcome, backend, time.monotonic() - launched)
            self._finish(action, outcome, reporter)
            reported = action
        finally:
            self._ended(key, reported)

    def _ended(self, key: str, reported: dpb.LeasedAction | None = None) -> None:
        """An action left this dispatcher: its capacity comes back now if it was lost or stopped, or
        once the control plane answered the report of its end (`reported`: the action, when one was made).

        Until then its slot stays taken. Freed at the end itself, the slots let this dispatcher lease
        faster than a busy server applied the reports: in a run of a million actions 20,000 ends went
        unanswered, each renewed by every heartbeat, which slowed the server further until leases lapsed.
        """
        self._running.pop(key, None)
        if key in self._waiting:
            self._waiting.discard(key)  # its credit went back when it started waiting
        elif reported is not None:
            self._owing.add((reported.tenant, reported.run, reported.spec.name, reported.attempt))
        else:
            self._give_credit()

    def _settled(self, ends: Sequence[dpb.PhaseReport]) -> None:
        """The control plane answered these reported ends (or refused them for good): their slots come back."""
        for end in ends:
            key = (end.tenant, end.run, end.name, end.attempt)
            if key in self._owing:  # not a recovered end, nor a parent's that gave its slot back when it waited
                self._owing.discard(key)
                self._give_credit()

    def _finish(
        self, action: dpb.LeasedAction, outcome: Outcome, reporter: Reporter, keeps_work: bool = True
    ) -> asyncio.Future[bool] | None:
        """Report a terminal outcome; the backend drops what it kept once the report was answered.

        Until then the reporter names it among its unanswered reports, and its lease is renewed.
        """
        report = _report(action, outcome.phase, outcome)
        retryable = not outcome.result.error.non_recoverable  # a NonRecoverableError spends no retries
        if outcome.phase in (pb.FAILED, pb.TIMED_OUT) and retryable and action.attempt <= action.spec.retries:
            report.retry_after_seconds = retry_backoff(action.attempt, action.spec)
        if not keeps_work:  # a pool keeps nothing once the outcome is here
            reporter.report(report)
            return None
        sent = reporter.report_answered(report)
        self._release_after(action, outcome, sent)
        return sent

    def _release_after(self, action: dpb.LeasedAction, outcome: Outcome, done: asyncio.Future[Any]) -> None:
        """Let the backend drop what it kept for `action` once `done` is (its report answered, its run stopped)."""
        release = asyncio.create_task(self._release(action, outcome, done))
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)

    async def _release(self, action: dpb.LeasedAction, outcome: Outcome, done: asyncio.Future[Any]) -> None:
        await asyncio.wait({done})  # whatever its result: a cancelled run must not cancel this
        try:
            await self.backend.release(action, outcome)
        except Exception:  # cleaning up must not break the dispatcher
            log.exception("could not release the work of %s", _ref(action), extra=_fields(action))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds())
            if self._holds_leases() and (request := self._heartbeat_request()).heartbeat.leases:
                self._outbox.put_nowait(request)

    def _heartbeat_seconds(self) -> float:
        return min(self._lease_seconds / 3, HEARTBEAT_SECONDS)

    def _holds_leases(self) -> bool:
        return bool(self._running or self._starts or next(self._unanswered(), None))

    def _unanswered(self) -> Iterator[dpb.PhaseReport]:
        """Ended here, their outcome not yet accepted by the control plane: their leases are still renewed."""
        return self._reporter.unanswered() if self._reporter is not None else iter(())

    def _heartbeat_request(self) -> dpb.LeaseRequest:
        """The leases to renew now: all held but the fresh ones (see FRESH_SKIP_SHARE), which the next names."""
        fresh, self._fresh = self._fresh, set()
        if 2 * self._heartbeat_seconds() > FRESH_SKIP_SHARE * self._lease_seconds:
            fresh = set()  # a short lease: the next heartbeat would come too late for it
        running = (a for key, (a, _) in self._running.items() if key not in fresh)
        starting = (a for a in self._starts.held() if not fresh or _ref(a) not in fresh)
        held = itertools.chain(running, starting)
        leases = [dpb.LeaseRef(tenant=a.tenant, run=a.run, name=a.spec.name, attempt=a.attempt) for a in held]
        ended = (dpb.LeaseRef(tenant=r.tenant, run=r.run, name=r.name, attempt=r.attempt) for r in self._unanswered())
        leases.extend(ended)
        return dpb.LeaseRequest(heartbeat=dpb.Heartbeat(leases=leases))


def retry_backoff(attempt: int, spec: pb.ActionSpec) -> float:
    """Seconds before the retry that follows failed attempt `attempt` (1-based).

    With the spec's backoff (Flyte's Backoff): min(base * factor^n, cap) for
    retry n = attempt - 1. Without it: 1, 2, 4, ... capped at a minute. Never
    0, which the report would read as "no retry".
    """
    if spec.HasField("backoff"):
        b = spec.backoff
        try:
            delay = b.base_seconds * max(b.factor, 1.0) ** (attempt - 1)
        except OverflowError:  # many retries of a growing backoff: the server caps the wait anyway
            delay = math.inf
        if b.cap_seconds > 0:
            delay = min(delay, b.cap_seconds)
        return max(delay, MIN_RETRY_SECONDS)
    return float(min(2 ** (attempt - 1), 60))


def _key(tenant: str, run: str, name: str) -> str:
    return f"{tenant}/{run}/{name}"


def _ref(action: dpb.LeasedAction) -> str:
    return _key(action.tenant, action.run, action.spec.name)


def _fields(action: dpb.LeasedAction) -> dict[str, str]:
    """The log fields naming an action (`--log-format json` makes them keys)."""
    return {"tenant": action.tenant, "run": action.run, "action": action.spec.name}


def _report(action: dpb.LeasedAction, phase: int, outcome: Outcome | None = None) -> dpb.PhaseReport:
    report = dpb.PhaseReport(
        tenant=action.tenant,
        run=action.run,
        name=action.spec.name,
        attempt=action.attempt,
        phase=phase,
    )
    if outcome is not None:
        report.result.CopyFrom(outcome.result)
    return report
