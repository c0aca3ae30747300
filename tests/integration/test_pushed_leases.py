"""Leases are pushed: work made leasable through any server wakes the lease streams of every server.

Two servers share a private Redis (no session dispatcher races the test for
its actions); the safety sweep is set to 30 s, so an action leased within a
few seconds was pushed, not found by the sweep.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from fanout.server import dispatch_service
from fanout.server.app import ControlPlane, create_server
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc
from tests.conftest import Tenant, make_tenant
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
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _requests(self) -> Iterator[dpb.LeaseRequest]:
        while (message := self._outbox.get()) is not None:
            yield message

    def _read(self) -> None:
        try:
            for response in self._call:
                for action in response.actions:
                    self.leased.put(action)
        except grpc.RpcError:
            pass  # cancelled by close()

    def next_action(self, timeout: float) -> dpb.LeasedAction:
        try:
            return self.leased.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing was leased within {timeout}s: the stream was not woken") from None

    def report(self, tenant: str, action: dpb.LeasedAction, phase: int) -> None:
        report = dpb.PhaseReport(
            tenant=tenant, run=action.run, name=action.spec.name, attempt=action.attempt, phase=phase
        )
        self.stub.Report(dpb.ReportRequest(reports=[report]), metadata=self.metadata, timeout=10)

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


def open_stream(loop_thread: LoopThread, plane: ControlPlane, tenant: Tenant, capacity: int = 8) -> LeaseStream:
    token = loop_thread.run(plane.tokens.create("dispatcher", tenant.name))
    return LeaseStream(plane, token, capacity)


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
