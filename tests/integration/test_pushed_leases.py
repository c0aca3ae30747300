"""Leases are pushed: work made leasable through any server wakes the lease streams of every server.
And watch events come in batches, which the SDK settles whole.

Two servers share a private Redis (no session dispatcher races the test for
its actions); the safety sweep is set to 30 s, so an action leased within a
few seconds was pushed, not found by the sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any

import grpc
import pytest

from fanout import serialization
from fanout.client import AsyncClient
from fanout.config import ClientConfig
from fanout.controller import Controller
from fanout.dispatch import reporter as reporter_module
from fanout.dispatch.reporter import Reporter, ReportStream
from fanout.quota.actions import ActionStore
from fanout.runtime import load_task
from fanout.server import dispatch_service, wakeup
from fanout.server.app import ControlPlane, create_server
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc
from tests.conftest import TASKS_FILE, Tenant, make_tenant
from tests.helpers import LoopThread

# Far longer than the waits below: an action leased in time was pushed to its stream.
SWEEP_SECONDS = 30.0
PUSHED_WITHIN = 3.0


@pytest.fixture
def two_planes(
    loop_thread: LoopThread,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ControlPlane, ControlPlane]]:
    monkeypatch.setattr(dispatch_service, "SWEEP_SECONDS", SWEEP_SECONDS)
    store = RedisProcess(tmp_path_factory.mktemp("pushed-redis")).start()
    own = replace(settings, redis_url=store.url)
    a = loop_thread.run(create_server(own))
    b = loop_thread.run(create_server(own))
    yield a, b
    loop_thread.run(a.stop(grace=1))
    loop_thread.run(b.stop(grace=1))
    store.stop()


@pytest.fixture
def tenant_on_a(loop_thread: LoopThread, two_planes: tuple[ControlPlane, ControlPlane]) -> Iterator[Tenant]:
    a, _ = two_planes
    t = make_tenant(loop_thread, a, f"127.0.0.1:{a.port}", prefix="push")
    yield t
    t.client.close()


class LeaseStream:
    """A raw lease stream, read on a thread so the test can wait for a response with a timeout."""

    def __init__(self, plane: ControlPlane, token: str, capacity: int) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{plane.port}")
        self.stub = dispatch_pb2_grpc.DispatchServiceStub(self._channel)
        self.metadata = [("authorization", f"Bearer {token}")]
        self._outbox: queue.Queue[dpb.LeaseRequest | None] = queue.Queue()
        self._outbox.put(dpb.LeaseRequest(hello=dpb.Hello(dispatcher_id="pushed", capacity=capacity)))
        self._call = self.stub.Lease(self._requests(), metadata=self.metadata, timeout=60)
        self.leased: queue.Queue[dpb.LeasedAction] = queue.Queue()
        self.answers: queue.Queue[dpb.ReportAnswer] = queue.Queue()
        self.takes_reports = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _requests(self) -> Iterator[dpb.LeaseRequest]:
        while (message := self._outbox.get()) is not None:
            yield message

    def _read(self) -> None:
        try:
            for response in self._call:
                if response.takes_reports:
                    self.takes_reports.set()
                for action in response.actions:
                    self.leased.put(action)
                for answer in response.answers:
                    self.answers.put(answer)
        except grpc.RpcError:
            pass  # cancelled by close()

    def next_action(self, timeout: float) -> dpb.LeasedAction:
        try:
            return self.leased.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing was leased within {timeout}s: the stream was not woken") from None

    def report(self, tenant: str, action: dpb.LeasedAction, phase: int) -> None:
        self.report_all([report_of(tenant, action, phase)])

    def report_all(self, reports: list[dpb.PhaseReport]) -> None:
        self.stub.Report(dpb.ReportRequest(reports=reports), metadata=self.metadata, timeout=10)

    def report_on_stream(self, batch_id: int, reports: list[dpb.PhaseReport]) -> dpb.ReportAnswer:
        """Send a batch as a message on this stream; its answer, read off the stream."""
        self._outbox.put(dpb.LeaseRequest(report=dpb.StreamedReport(id=batch_id, reports=reports)))
        try:
            return self.answers.get(timeout=10)
        except queue.Empty:
            raise AssertionError(f"batch {batch_id} sent on the stream got no answer") from None

    def close(self) -> None:
        self._outbox.put(None)
        self._call.cancel()
        self._reader.join(5)
        self._channel.close()


@pytest.fixture
def streams(
    loop_thread: LoopThread, two_planes: tuple[ControlPlane, ControlPlane], tenant_on_a: Tenant
) -> Iterator[list[LeaseStream]]:
    opened: list[LeaseStream] = []
    yield opened
    for stream in opened:
        stream.close()


def report_of(tenant: str, action: dpb.LeasedAction, phase: int, outputs: bytes = b"") -> dpb.PhaseReport:
    report = dpb.PhaseReport(tenant=tenant, run=action.run, name=action.spec.name, attempt=action.attempt, phase=phase)
    if outputs:
        report.result.outputs = outputs
    return report


def open_stream(loop_thread: LoopThread, plane: ControlPlane, tenant: Tenant, capacity: int = 8) -> LeaseStream:
    token = loop_thread.run(plane.tokens.create("dispatcher", tenant.name))
    return LeaseStream(plane, token, capacity)


def leased_roots(
    loop_thread: LoopThread, plane: ControlPlane, tenant: Tenant, streams: list[LeaseStream], count: int
) -> tuple[LeaseStream, list[dpb.LeasedAction]]:
    """`count` new runs of `tenant`, their roots leased on a stream of `plane` (closed after the test)."""
    for _ in range(count):
        tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    stream = open_stream(loop_thread, plane, tenant, capacity=count)
    streams.append(stream)
    return stream, [stream.next_action(PUSHED_WITHIN) for _ in range(count)]


@contextlib.asynccontextmanager
async def reporter_on(
    plane: ControlPlane, metadata: Sequence[tuple[str, str]], *interceptors: grpc.aio.ClientInterceptor
) -> AsyncIterator[Reporter]:
    """A started Reporter on a channel of its own to `plane`, sending with `metadata`; stopped after."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{plane.port}", interceptors=interceptors or None) as channel:
        reporter = Reporter(dispatch_pb2_grpc.DispatchServiceStub(channel), tuple(metadata))
        reporter.start()
        try:
            yield reporter
        finally:
            await reporter.stop()


def test_an_admission_through_one_server_wakes_a_stream_on_another(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    _, b = two_planes
    stream = open_stream(loop_thread, b, tenant_on_a)
    streams.append(stream)
    for i in range(3):  # each admission on an idle system, not only the first
        run = tenant_on_a.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
        action = stream.next_action(PUSHED_WITHIN)
        assert (action.run, action.spec.name) == (run.name, "root"), i


def test_an_admission_wakes_its_own_servers_stream_without_the_published_wake(
    loop_thread: LoopThread,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server hears of what it admits at once, not through its wake coming back from Redis:
    this one never subscribes to the published wakes, and its stream is leased to all the same."""

    async def deaf(self: wakeup.Wakeup) -> None:
        await asyncio.Event().wait()  # never subscribes, until the server stops it

    monkeypatch.setattr(dispatch_service, "SWEEP_SECONDS", SWEEP_SECONDS)
    monkeypatch.setattr(wakeup.Wakeup, "listen", deaf)
    store = RedisProcess(tmp_path_factory.mktemp("deaf-redis")).start()
    plane = loop_thread.run(create_server(replace(settings, redis_url=store.url)))
    tenant = make_tenant(loop_thread, plane, f"127.0.0.1:{plane.port}", prefix="deaf")
    stream = open_stream(loop_thread, plane, tenant)
    try:
        for i in range(3):
            run = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
            action = stream.next_action(PUSHED_WITHIN)
            assert (action.run, action.spec.name) == (run.name, "root"), i
    finally:
        stream.close()
        tenant.client.close()
        loop_thread.run(plane.stop(grace=1))
        store.stop()


def test_a_freed_concurrency_slot_wakes_a_waiting_action(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    a, b = two_planes
    tenant_on_a.set_limits(max_concurrency=1)
    first = tenant_on_a.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    on_a = open_stream(loop_thread, a, tenant_on_a, capacity=1)
    streams.append(on_a)
    held = on_a.next_action(PUSHED_WITHIN)
    assert held.run == first.name

    on_b = open_stream(loop_thread, b, tenant_on_a)
    streams.append(on_b)
    second = tenant_on_a.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    with pytest.raises(AssertionError):  # the tenant's only slot is taken
        on_b.next_action(0.5)

    on_a.report(tenant_on_a.name, held, pb.SUCCEEDED)  # through server A: frees the slot
    action = on_b.next_action(PUSHED_WITHIN)
    assert action.run == second.name


def test_a_tenant_woken_while_its_last_drain_is_being_unmarked_is_leased_without_waiting_for_it(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lease that took a tenant's last work unmarks the tenant (ActionStore.mark_idle: round trips
    that took tens of milliseconds behind a busy Redis) beside the stream. Here the unmarking is held
    until the test ends: a run created meanwhile must be leased all the same."""
    a, _ = two_planes
    unmarking, release = threading.Event(), threading.Event()
    mark_idle = ActionStore.mark_idle

    async def held(store: ActionStore, tenant: str) -> None:
        unmarking.set()
        await asyncio.to_thread(release.wait)
        await mark_idle(store, tenant)

    monkeypatch.setattr(ActionStore, "mark_idle", held)
    try:
        first = tenant_on_a.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
        stream = open_stream(loop_thread, a, tenant_on_a, capacity=2)
        streams.append(stream)
        assert stream.next_action(PUSHED_WITHIN).run == first.name
        assert unmarking.wait(PUSHED_WITHIN), "the tenant's last work was leased: it is unmarked"
        second = tenant_on_a.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
        assert stream.next_action(PUSHED_WITHIN).run == second.name
    finally:
        release.set()


def test_a_batched_watch_carries_several_updates_and_the_sdk_settles_them_all(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    a, _ = two_planes
    children = 20
    square = load_task(f"file:{TASKS_FILE}:square")
    run = tenant_on_a.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    stream = open_stream(loop_thread, a, tenant_on_a, capacity=children + 1)
    streams.append(stream)
    assert stream.next_action(PUSHED_WITHIN).spec.name == "root"

    async def fan() -> list[int]:
        client = AsyncClient(ClientConfig(endpoint=f"127.0.0.1:{a.port}", token=tenant_on_a.token))
        controller = Controller(client, run.name, "root")
        try:
            return list(await asyncio.gather(*(controller.call(square, (i,), {}) for i in range(children))))
        finally:
            await controller.close()
            await client.close()

    outputs = asyncio.run_coroutine_threadsafe(fan(), loop_thread.loop)
    leased = [stream.next_action(PUSHED_WITHIN) for _ in range(children)]
    # Every child finishes in one report, so one read of the event stream returns them all.
    # (Which child gets which square does not matter here: each caller gets the one reported.)
    stream.report_all(
        [
            report_of(tenant_on_a.name, action, pb.SUCCEEDED, serialization.encode_output("square", i * i))
            for i, action in enumerate(leased)
        ]
    )
    assert sorted(outputs.result(10)) == [i * i for i in range(children)]

    events = tenant_on_a.client.watch_children(run.name, "root", cursor="0-0", timeout=10, batched=True)
    first = next(events)
    events.close()
    assert [u.phase for u in first.updates] == [pb.SUCCEEDED] * children
    assert first.cursor  # the cursor after the last of them


class CountReports(grpc.aio.UnaryUnaryClientInterceptor):
    """Counts the Report calls a real channel makes."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if isinstance(request, dpb.ReportRequest):
            self.calls.append(len(request.reports))
        return await continuation(details, request)


def test_reports_made_in_one_turn_of_the_loop_share_one_call(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    a, _ = two_planes
    stream, leased = leased_roots(loop_thread, a, tenant_on_a, streams, 10)

    async def report_all() -> list[bool]:
        counter = CountReports()
        async with reporter_on(a, stream.metadata, counter) as reporter:
            sent = [reporter.report_answered(report_of(tenant_on_a.name, action, pb.RUNNING)) for action in leased]
            return [*await asyncio.gather(*sent), counter.calls == [len(leased)]]

    assert all(loop_thread.run(report_all()))
    assert {tenant_on_a.client.get_action(x.run, "root").phase for x in leased} == {pb.RUNNING}


class StallTenant(grpc.aio.UnaryUnaryClientInterceptor):
    """Holds every Report call that carries reports of one tenant until released."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.release = asyncio.Event()

    def holds(self, report: dpb.PhaseReport) -> bool:
        return report.tenant == self.tenant

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if isinstance(request, dpb.ReportRequest) and any(self.holds(r) for r in request.reports):
            await self.release.wait()
        return await continuation(details, request)


def test_a_lone_report_goes_out_in_the_next_turn_of_the_loop(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The turn that made it is all its lane waits for: its call starts before whatever that turn
    scheduled after it (on an idle dispatcher, a further turn was a further half millisecond)."""
    a, _ = two_planes
    stream, (action,) = leased_roots(loop_thread, a, tenant_on_a, streams, 1)

    async def calls_started_by_the_next_callback() -> list[int]:
        async with reporter_on(a, stream.metadata) as reporter:
            started: list[int] = []
            begin = reporter._begin

            def noted(batch: list[dpb.PhaseReport]) -> Any:
                started.append(len(batch))
                return begin(batch)

            monkeypatch.setattr(reporter, "_begin", noted)
            answered = reporter.report_answered(report_of(tenant_on_a.name, action, pb.RUNNING))
            seen: list[int] = []
            asyncio.get_running_loop().call_soon(lambda: seen.append(len(started)))
            assert await answered
            return seen

    assert loop_thread.run(calls_started_by_the_next_callback()) == [1]


def test_reports_sent_on_the_lease_stream_are_applied_and_answered_on_it(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    """No Report call and no token lookup per batch: the stream's token was checked when it opened.
    A batch refused whole (this dispatcher is scoped to another tenant) gets the status a call would
    have ended with, and the stream goes on."""
    a, _ = two_planes
    runs = [tenant_on_a.client.create_run(pb.ActionSpec(task_ref="module:x:y")).name for _ in range(2)]
    stream = open_stream(loop_thread, a, tenant_on_a)
    streams.append(stream)
    assert stream.takes_reports.wait(PUSHED_WITHIN)  # said in the stream's first response
    leased = [stream.next_action(PUSHED_WITHIN) for _ in runs]

    running = stream.report_on_stream(7, [report_of(tenant_on_a.name, action, pb.RUNNING) for action in leased])
    assert (running.id, running.error_code, running.response.ignored) == (7, 0, 0)
    assert {tenant_on_a.client.get_action(run, "root").phase for run in runs} == {pb.RUNNING}

    elsewhere = stream.report_on_stream(8, [report_of("another-tenant", leased[0], pb.SUCCEEDED)])
    assert (elsewhere.id, elsewhere.error_code) == (8, grpc.StatusCode.PERMISSION_DENIED.value[0])
    assert "another-tenant" in elsewhere.error_details

    done = [report_of(tenant_on_a.name, action, pb.SUCCEEDED, b"42") for action in leased]
    ended = stream.report_on_stream(9, [*done, done[0]])  # the repeat is ignored, as in a call
    assert (ended.id, ended.error_code, ended.response.ignored) == (9, 0, 1)
    assert {tenant_on_a.client.get_action(run, "root").phase for run in runs} == {pb.SUCCEEDED}


def test_a_batch_whose_stream_ended_unanswered_is_sent_again_by_a_call(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    """A dispatcher's lease stream broke with a batch on it: the batch is sent again, by a Report call
    until the next stream takes reports (reports are idempotent, so sending one twice is safe)."""
    a, _ = two_planes
    stream, (action,) = leased_roots(loop_thread, a, tenant_on_a, streams, 1)

    async def report_across_the_break() -> list[int]:
        counter = CountReports()
        async with reporter_on(a, stream.metadata, counter) as reporter:
            lost: list[dpb.LeaseRequest] = []
            broken = ReportStream(lost.append)  # its messages never leave: the stream is breaking
            reporter.use_stream(broken)
            answered = reporter.report_answered(report_of(tenant_on_a.name, action, pb.SUCCEEDED, b"1"))
            await asyncio.sleep(0.1)
            reporter.use_stream(None)  # what the dispatcher does when a stream ends, then:
            broken.close()
            assert await asyncio.wait_for(answered, PUSHED_WITHIN)
            return [len(lost), *counter.calls]

    assert loop_thread.run(report_across_the_break()) == [1, 1]  # once on the stream, once by a call
    assert tenant_on_a.client.get_action(action.run, "root").phase == pb.SUCCEEDED


def test_a_tenants_reports_do_not_wait_behind_another_tenants_call(
    loop_thread: LoopThread, two_planes: tuple[ControlPlane, ControlPlane]
) -> None:
    a, _ = two_planes
    token = loop_thread.run(a.tokens.create("dispatcher"))

    def running(tenant: str) -> dpb.PhaseReport:
        return dpb.PhaseReport(tenant=tenant, run="r1", name="root", attempt=1, phase=pb.RUNNING)

    async def small_goes_first() -> bool:
        stall = StallTenant("large")
        async with reporter_on(a, [("authorization", f"Bearer {token}")], stall) as reporter:
            large = reporter.report_answered(running("large"))
            await asyncio.sleep(0.1)  # its call is out, and held
            small = await asyncio.wait_for(reporter.report_answered(running("small")), PUSHED_WITHIN)
            held = not large.done()
            stall.release.set()
            return small and held and await large

    assert loop_thread.run(small_goes_first())


class StallRun(StallTenant):
    """Notes the size of every Report call, and holds those that carry a report of one run until released."""

    def __init__(self, run: str) -> None:
        super().__init__("")
        self.run = run
        self.sizes: list[int] = []

    def holds(self, report: dpb.PhaseReport) -> bool:
        return report.run == self.run

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.sizes.append(len(request.reports))
        return await super().intercept_unary_unary(continuation, details, request)


def test_a_report_does_not_wait_for_the_answer_to_a_small_call_of_its_tenant(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    """A small call in flight is no backlog to batch behind: the tenant's next report goes at once.
    (One call at a time kept a small tenant's RUNNING reports ~100 ms late under a large fanout.)"""
    a, _ = two_planes
    stream, (first, second) = leased_roots(loop_thread, a, tenant_on_a, streams, 2)

    async def scenario() -> list[bool]:
        stall = StallRun(first.run)
        async with reporter_on(a, stream.metadata, stall) as reporter:
            held = reporter.report_answered(report_of(tenant_on_a.name, first, pb.RUNNING))
            await asyncio.sleep(0.1)  # its call is out, and held
            next_one = reporter.report_answered(report_of(tenant_on_a.name, second, pb.RUNNING))
            went = await asyncio.wait_for(next_one, PUSHED_WITHIN)
            still_held = not held.done()
            stall.release.set()
            return [went, still_held, await held]

    assert loop_thread.run(scenario()) == [True, True, True]
    assert {tenant_on_a.client.get_action(x.run, "root").phase for x in (first, second)} == {pb.RUNNING}


def test_reports_made_while_a_call_carrying_a_backlog_is_in_flight_wait_and_share_one_call(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under load each call carries more: a tenant whose call in flight carries PIPELINED_BELOW reports
    or more sends nothing until it is answered, then what came meanwhile in one call."""
    monkeypatch.setattr(reporter_module, "PIPELINED_BELOW", 2)  # a backlog of two: the test stays small
    a, _ = two_planes
    stream, leased = leased_roots(loop_thread, a, tenant_on_a, streams, 5)

    async def scenario() -> list[list[int]]:
        stall = StallRun(leased[0].run)
        async with reporter_on(a, stream.metadata, stall) as reporter:
            sent = [reporter.report_answered(report_of(tenant_on_a.name, x, pb.RUNNING)) for x in leased[:2]]
            await asyncio.sleep(0.1)  # one call of two out, and held
            for action in leased[2:]:  # made apart: without the backlog, each would go on its own
                sent.append(reporter.report_answered(report_of(tenant_on_a.name, action, pb.RUNNING)))
                await asyncio.sleep(0.02)
            while_held = list(stall.sizes)
            stall.release.set()
            assert all(await asyncio.wait_for(asyncio.gather(*sent), PUSHED_WITHIN))
            return [while_held, stall.sizes]

    assert loop_thread.run(scenario()) == [[2], [2, 3]]


def test_an_end_reported_while_its_running_report_waits_supersedes_it(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    """A terminal report made while its action's RUNNING report still waits in the lane replaces it:
    the action moves straight to its end (one event for the parent's watch, not two)."""
    a, _ = two_planes
    stream, (first, *others) = leased_roots(loop_thread, a, tenant_on_a, streams, 3)
    sent: list[list[tuple[str, int]]] = []

    class Held(StallTenant):
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            sent.append([(r.run, r.phase) for r in request.reports])
            return await super().intercept_unary_unary(continuation, details, request)

    async def scenario() -> list[bool]:
        held = Held(tenant_on_a.name)
        async with reporter_on(a, stream.metadata, held) as reporter:
            outcomes = [reporter.report_answered(report_of(tenant_on_a.name, first, pb.RUNNING))]
            await asyncio.sleep(0.1)  # its call is out, and held: the lane is busy
            outcomes += [reporter.report_answered(report_of(tenant_on_a.name, x, pb.RUNNING)) for x in others]
            outcomes += [reporter.report_answered(report_of(tenant_on_a.name, x, pb.SUCCEEDED)) for x in others]
            held.release.set()
            return list(await asyncio.gather(*outcomes))

    assert all(loop_thread.run(scenario()))
    # The second call carries the two ends alone: their RUNNING reports never left.
    assert sent == [[(first.run, pb.RUNNING)], [(x.run, pb.SUCCEEDED) for x in others]]
    assert [tenant_on_a.client.get_action(x.run, "root").phase for x in others] == [pb.SUCCEEDED] * 2


def test_held_running_reports_made_apart_share_one_call(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One-shot actions start one by one: their RUNNING reports, held, go in one call, where
    reports made as far apart without the hold go one per call."""
    monkeypatch.setattr(reporter_module, "RUNNING_HOLD_SECONDS", 1.0)  # far longer than the reporting
    a, _ = two_planes
    stream, leased = leased_roots(loop_thread, a, tenant_on_a, streams, 6)

    async def report_apart() -> list[int]:
        counter = CountReports()
        async with reporter_on(a, stream.metadata, counter) as reporter:
            for action in leased[:3]:  # each answered before the next is made
                assert await reporter.report_answered(report_of(tenant_on_a.name, action, pb.RUNNING))
            for action in leased[3:]:
                reporter.report(report_of(tenant_on_a.name, action, pb.RUNNING), hold=True)
                await asyncio.sleep(0.01)
            await reporter.drain()
            return counter.calls

    assert loop_thread.run(report_apart()) == [1, 1, 1, 3]
    assert {tenant_on_a.client.get_action(x.run, "root").phase for x in leased} == {pb.RUNNING}


def test_an_end_goes_at_once_taking_held_reports_along_and_dropping_its_own(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An end does not wait out the hold: it goes at once with the held RUNNING reports of its
    tenant, but its own action's RUNNING never leaves (the action went straight to its end)."""
    monkeypatch.setattr(reporter_module, "RUNNING_HOLD_SECONDS", 600.0)  # the test would time out first
    a, _ = two_planes
    stream, (ended, running) = leased_roots(loop_thread, a, tenant_on_a, streams, 2)
    sent: list[list[tuple[str, int]]] = []

    class Noted(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            sent.append([(r.run, r.phase) for r in request.reports])
            return await continuation(details, request)

    async def scenario() -> bool:
        async with reporter_on(a, stream.metadata, Noted()) as reporter:
            reporter.report(report_of(tenant_on_a.name, ended, pb.RUNNING), hold=True)
            reporter.report(report_of(tenant_on_a.name, running, pb.RUNNING), hold=True)
            await asyncio.sleep(0.05)
            end = reporter.report_answered(report_of(tenant_on_a.name, ended, pb.SUCCEEDED))
            return await asyncio.wait_for(end, 10)

    assert loop_thread.run(scenario())
    assert sent == [[(running.run, pb.RUNNING), (ended.run, pb.SUCCEEDED)]]
    assert tenant_on_a.client.get_action(running.run, "root").phase == pb.RUNNING
    assert tenant_on_a.client.get_action(ended.run, "root").phase == pb.SUCCEEDED


def test_results_bigger_than_a_page_all_reach_a_batched_watch(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    a, _ = two_planes
    tenant_on_a.set_limits(max_payload_bytes=800_000)
    run = tenant_on_a.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    tenant_on_a.client.submit_batch(run.name, "root", [pb.ActionSpec(name=f"c{i}", task_ref="m:x:y") for i in range(3)])
    stream = open_stream(loop_thread, a, tenant_on_a, capacity=4)
    streams.append(stream)
    leased = [stream.next_action(PUSHED_WITHIN) for _ in range(4)]
    children = [action for action in leased if action.spec.name != "root"]
    big = b"o" * 700_000  # each over half a page: a page (and an event) holds one
    stream.report_all([report_of(tenant_on_a.name, action, pb.SUCCEEDED, big) for action in children])

    seen: dict[str, int] = {}
    events = tenant_on_a.client.watch_children(run.name, "root", cursor="0-0", timeout=10, batched=True)
    for event in events:
        assert len(event.updates) <= 1
        seen.update((u.name, len(u.result.outputs)) for u in event.updates)
        if len(seen) == 3:
            break
    events.close()
    assert seen == {"c0": len(big), "c1": len(big), "c2": len(big)}


def test_a_retry_falling_due_wakes_a_stream_on_another_server(
    loop_thread: LoopThread,
    two_planes: tuple[ControlPlane, ControlPlane],
    tenant_on_a: Tenant,
    streams: list[LeaseStream],
) -> None:
    a, b = two_planes
    run = tenant_on_a.client.create_run(pb.ActionSpec(task_ref="module:x:y", retries=1))
    on_b = open_stream(loop_thread, b, tenant_on_a)
    streams.append(on_b)
    first = on_b.next_action(PUSHED_WITHIN)
    reporter = open_stream(loop_thread, a, tenant_on_a, capacity=0)  # reports through server A
    streams.append(reporter)
    failed = report_of(tenant_on_a.name, first, pb.FAILED)
    failed.retry_after_seconds = 0.5
    reporter.report_all([failed])
    again = on_b.next_action(PUSHED_WITHIN)
    assert (again.run, again.attempt) == (run.name, 2)
