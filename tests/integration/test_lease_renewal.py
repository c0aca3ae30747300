"""An action's lease stays renewed after it ended, until its outcome report is answered, and
while it has not said it runs.

The defect this pins (fixed in 2f31adc): an action left the dispatcher's heartbeat when it ended,
before its report was answered. Behind a busy server the report could wait longer than a lease
period; the server then reclaimed the lease of an action that had already finished, queued it
again, and it ran a second time.

Here the server is real and not slowed but for one thing: the batch of reports carrying the
action's end is held before it is applied (DispatchService._apply, whether it came on the lease
stream or in a Report call) for several lease periods, the way a busy server's backlog holds it.
The lease must survive the wait, and the action must end once. The control plane is this module's
own, with a short lease, and no other dispatcher leases from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from fanout import channel
from fanout.config import ClientConfig
from fanout.dispatch import dispatcher as dispatcher_module
from fanout.dispatch import pools as pools_module
from fanout.dispatch.backend import Outcome, StartedCallback
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.process_backend import ProcessBackend
from fanout.quota import keys
from fanout.quota.tokens import Principal
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from fanout.server.dispatch_service import DispatchService
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from tests.conftest import TASKS_FILE, Tenant
from tests.helpers import LoopThread, eventually

LEASE_SECONDS = 2.0
# Reclaiming an unrenewed lease takes one lease period and one reap interval: the report is held
# for well over that, so an unrenewed lease would have been reclaimed (and the action leased again).
HELD_SECONDS = 3.5 * LEASE_SECONDS
TERMINAL = (pb.SUCCEEDED, pb.FAILED, pb.ABORTED, pb.TIMED_OUT)


@pytest.fixture(scope="module")
def own_settings(settings: Settings, own_redis: RedisProcess) -> Settings:
    return replace(settings, redis_url=own_redis.url, lease_seconds=LEASE_SECONDS, reap_interval_seconds=0.2)


class HoldEnds:
    """In the server: records every report it is to apply, and holds each batch that carries an
    action's end until released (the batch is then applied unchanged)."""

    def __init__(self, apply: Callable[..., Awaitable[dpb.ReportResponse]]) -> None:
        self.release = asyncio.Event()  # set on the loop's thread (call_soon_threadsafe)
        self.holding = threading.Event()  # seen by the test's thread
        self.reports: list[tuple[str, int, int]] = []  # (run, attempt, phase), in the order sent
        self._apply = apply

    async def __call__(
        self, service: DispatchService, who: Principal, reports: Sequence[dpb.PhaseReport]
    ) -> dpb.ReportResponse:
        self.reports += [(r.run, r.attempt, r.phase) for r in reports]
        if any(r.phase in TERMINAL for r in reports):
            self.holding.set()
            await self.release.wait()
        return await self._apply(service, who, reports)


@contextlib.contextmanager
def dispatching(
    loop_thread: LoopThread, plane: ControlPlane, backend: ProcessBackend, capacity: int, hold: HoldEnds | None = None
) -> Iterator[Dispatcher]:
    """A dispatcher of `plane` on the loop's thread, stopped on exit; the reports `hold` holds are
    let go first (its stop waits for them)."""
    token = loop_thread.run(plane.tokens.create("dispatcher"))
    config = ClientConfig(endpoint=f"127.0.0.1:{plane.port}", token=token)
    dispatcher = Dispatcher(config, backend, capacity=capacity)
    running = asyncio.run_coroutine_threadsafe(dispatcher.run(), loop_thread.loop)
    try:
        yield dispatcher
    finally:
        if hold is not None:
            loop_thread.loop.call_soon_threadsafe(hold.release.set)
        loop_thread.loop.call_soon_threadsafe(dispatcher.stop)
        running.result(30)


def held_ends(monkeypatch: pytest.MonkeyPatch) -> HoldEnds:
    """Hold, in this module's server, every batch of reports that carries an action's end."""
    hold = HoldEnds(DispatchService._apply)

    async def held(service: DispatchService, who: Principal, reports: Sequence[dpb.PhaseReport]) -> dpb.ReportResponse:
        return await hold(service, who, reports)

    monkeypatch.setattr(DispatchService, "_apply", held)
    return hold


class CountingBackend(ProcessBackend):
    """The real process backend, noting each (run, attempt) it is given to run."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ran: list[tuple[str, int]] = []

    async def run(self, action: dpb.LeasedAction, endpoint: str, on_started: StartedCallback) -> Outcome:
        self.ran.append((action.run, action.attempt))
        return await super().run(action, endpoint, on_started)


def test_an_ended_actions_lease_is_renewed_while_its_report_waits(
    loop_thread: LoopThread,
    own_plane: ControlPlane,
    own_redis_client: redis.Redis,
    own_tenant: Tenant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hold = held_ends(monkeypatch)
    backend = CountingBackend(tmp_path / "actions")
    with dispatching(loop_thread, own_plane, backend, capacity=4, hold=hold):
        run = own_tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y", command=["true"])).name
        assert hold.holding.wait(15), f"the action's end was never reported; reports sent: {hold.reports}"
        ended = time.monotonic()
        assert (run, 1, pb.SUCCEEDED) in hold.reports

        # The action has ended here; its report waits. Its lease must outlive several lease periods.
        time.sleep(HELD_SECONDS)
        status = own_tenant.client.get_action(run, "root")
        tenant_keys = keys.TenantKeys(own_tenant.name)
        lost = own_redis_client.hget(f"{tenant_keys.prefix}lost:{run}", "root")
        still_leased = own_redis_client.zscore(tenant_keys.leased, f"{run}/root") is not None
        waited = time.monotonic() - ended
        assert (status.attempt, lost, still_leased, backend.ran) == (1, None, True, [(run, 1)]), (
            f"after {waited:.1f}s ({waited / LEASE_SECONDS:.1f} lease periods) with its end unreported, the "
            f"server reclaimed the ended action's lease: attempt {status.attempt}, "
            f"phase {pb.Phase.Name(status.phase)}, leases lost {lost!r}, still leased {still_leased}, "
            f"runs here {backend.ran}"
        )
        assert status.phase in (pb.INITIALIZING, pb.RUNNING)  # not ended yet: its end is still held

        # The report goes out: the action ends once, in its first attempt.
        loop_thread.loop.call_soon_threadsafe(hold.release.set)

        def its_end() -> tuple[str, int]:
            now = own_tenant.client.get_action(run, "root")
            assert now.phase in TERMINAL, pb.Phase.Name(now.phase)
            return pb.Phase.Name(now.phase), now.attempt

        assert eventually(its_end, timeout=10) == ("SUCCEEDED", 1)
        assert backend.ran == [(run, 1)]
        assert {attempt for r, attempt, _ in hold.reports if r == run} == {1}
        assert [phase for r, _, phase in hold.reports if r == run and phase in TERMINAL] == [pb.SUCCEEDED]


def test_an_ended_actions_slot_comes_back_once_its_report_is_answered(
    loop_thread: LoopThread,
    own_plane: ControlPlane,
    own_tenant: Tenant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dispatcher holds its capacity in actions running or ended but not yet recorded. Freed at
    the end itself, a slot let a dispatcher lease faster than a busy server applied its reports:
    in a run of a million actions 20,000 ends went unanswered, each renewed by every heartbeat,
    until the server fell so far behind that leases lapsed. Here the capacity is one action."""
    hold = held_ends(monkeypatch)
    with dispatching(loop_thread, own_plane, ProcessBackend(tmp_path / "actions"), capacity=1, hold=hold):
        spec = pb.ActionSpec(task_ref="module:x:y", command=["true"])
        first = own_tenant.client.create_run(spec).name
        assert hold.holding.wait(15), f"the action's end was never reported; reports sent: {hold.reports}"
        second = own_tenant.client.create_run(spec).name
        time.sleep(1.0)  # a lease is pushed within milliseconds: this one must not come while the end waits
        assert pb.Phase.Name(own_tenant.client.get_action(second, "root").phase) == "QUEUED"

        loop_thread.loop.call_soon_threadsafe(hold.release.set)

        def both_ended() -> list[str]:
            phases = [pb.Phase.Name(own_tenant.client.get_action(run, "root").phase) for run in (first, second)]
            assert phases == ["SUCCEEDED", "SUCCEEDED"], phases
            return phases

        eventually(both_ended, timeout=15)


class CountCalls(grpc.aio.UnaryUnaryClientInterceptor):
    """On the dispatcher's channel: the unary calls it makes, by method."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method
        self.methods.append(method.decode() if isinstance(method, bytes) else method)
        return await continuation(details, request)


def test_a_dispatcher_sends_its_reports_on_its_lease_stream(
    loop_thread: LoopThread,
    own_plane: ControlPlane,
    own_tenant: Tenant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its server takes them there: an action's RUNNING and its end make no Report call."""
    calls = CountCalls()

    def counted_channel(config: ClientConfig) -> grpc.aio.Channel:
        # The dispatcher's one channel, as channel.async_channel makes it, with the interceptor.
        return grpc.aio.insecure_channel(config.endpoint, options=channel._OPTIONS, interceptors=[calls])

    monkeypatch.setattr(dispatcher_module, "async_channel", counted_channel)
    with dispatching(loop_thread, own_plane, ProcessBackend(tmp_path / "a"), capacity=4):
        run = own_tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y", command=["sleep", "0.3"])).name
        seen: list[int] = []

        def its_end() -> bool:
            phase = own_tenant.client.get_action(run, "root").phase
            seen.append(phase)
            return phase == pb.SUCCEEDED

        eventually(its_end, timeout=15)
        assert pb.RUNNING in seen  # its RUNNING report was applied too, before its end
        assert "/fanout.v1.DispatchService/Report" not in calls.methods, calls.methods


def test_an_action_that_never_said_it_runs_keeps_its_lease_past_its_first_heartbeat(
    loop_thread: LoopThread,
    own_plane: ControlPlane,
    own_tenant: Tenant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A heartbeat leaves out the leases taken since the one before whose actions have not said they
    run (dispatcher.FRESH_SKIP_SHARE); the next heartbeat names them. Here heartbeats go often enough
    for that (eight per lease period), and a pooled child holds its worker in its first step for
    several lease periods, so it never says it runs: its lease must be renewed all the same, and it
    must run once. A first child warms that worker up: a worker's first action awaits its code, and
    so says it runs. The pool's own RUNNING for an action whose worker says nothing for a while
    (pools.UNTOLD_RUNNING_SECONDS) is put off past the test: it would name the lease too."""
    monkeypatch.setattr(dispatcher_module, "HEARTBEAT_SECONDS", LEASE_SECONDS / 8)
    monkeypatch.setattr(pools_module, "UNTOLD_RUNNING_SECONDS", 10 * HELD_SECONDS)
    named: list[tuple[str, str]] = []
    heartbeat = DispatchService._heartbeat

    async def recorded(service: DispatchService, who: Principal, beat: dpb.Heartbeat) -> dpb.LeaseResponse:
        named.extend((lease.run, lease.name) for lease in beat.leases)
        return await heartbeat(service, who, beat)

    monkeypatch.setattr(DispatchService, "_heartbeat", recorded)
    with dispatching(loop_thread, own_plane, ProcessBackend(tmp_path / "actions"), capacity=4):
        parent = load_task(f"file:{TASKS_FILE}:blocks_a_warm_workers_first_step")
        run = start_run(own_tenant.client, parent, HELD_SECONDS)
        warm_up_pid, blocked_pid = run.wait(HELD_SECONDS + 30).outputs()
        assert warm_up_pid == blocked_pid  # the blocked child ran on a warm worker
        actions = own_tenant.client.list_actions(pb.ListActionsRequest(run=run.name)).actions
        attempts = {a.name: a.attempt for a in actions}
        # The blocked child's renewals: the warm-up child's lease lasted a moment.
        renewals = max(named.count((run.name, a.name)) for a in actions if a.name != "root")
        assert set(attempts.values()) == {1}, f"an action lost its lease: attempts {attempts}, {renewals} renewals"
        assert renewals >= 8, f"the blocked child was named by {renewals} heartbeats"  # renewed, not lucky
