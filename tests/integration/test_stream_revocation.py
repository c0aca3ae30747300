"""Revocation reaches open streams: a stream whose token stops resolving ends UNAUTHENTICATED."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import grpc
import pytest

from fanout.client import Client
from fanout.config import ClientConfig
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc, dispatch_pb2_grpc
from fanout.v1 import dispatch_pb2 as dpb
from tests.conftest import Tenant
from tests.helpers import LoopThread

# Revocation must reach an open stream within a second or two.
REACH_SECONDS = 2.5


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture
def channel(endpoint: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(endpoint) as ch:
        yield ch


def end_of(stream: Iterator[object]) -> tuple[grpc.StatusCode, float, list[object]]:
    """Read a stream to its end: its status, how long that took, and what it delivered."""
    started = time.monotonic()
    delivered = []
    with pytest.raises(grpc.RpcError) as info:
        for item in stream:
            delivered.append(item)
    return info.value.code(), time.monotonic() - started, delivered


def test_a_revoked_dispatcher_tokens_lease_stream_ends_unauthenticated(
    tenant: Tenant, loop_thread: LoopThread, plane: ControlPlane, channel: grpc.Channel
) -> None:
    token = loop_thread.run(plane.tokens.create("dispatcher", tenant.name))
    outbox: queue.Queue[dpb.LeaseRequest | None] = queue.Queue()
    # A heartbeat for a lease this dispatcher does not hold is answered
    # "cancelled": proof that the stream is open and authenticated.
    unknown = dpb.LeaseRequest(heartbeat=dpb.Heartbeat(leases=[dpb.LeaseRef(tenant=tenant.name, run="r1", name="x")]))
    outbox.put(dpb.LeaseRequest(hello=dpb.Hello(dispatcher_id="revoked", capacity=8)))
    outbox.put(unknown)

    def requests() -> Iterator[dpb.LeaseRequest]:
        while (message := outbox.get()) is not None:
            yield message

    call = dispatch_pb2_grpc.DispatchServiceStub(channel).Lease(requests(), metadata=bearer(token), timeout=10)
    try:
        assert next(call).takes_reports  # every lease stream's first response
        assert next(call).cancelled
        loop_thread.run(plane.tokens.revoke(token))
        # New work for this tenant: a stream that outlives its token would lease it.
        tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
        code, took, delivered = end_of(call)
    finally:
        outbox.put(None)

    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, took, delivered)
    assert took < REACH_SECONDS


def test_a_revoked_tenant_tokens_watch_ends_unauthenticated(
    tenant: Tenant, loop_thread: LoopThread, plane: ControlPlane, channel: grpc.Channel
) -> None:
    # A root that keeps running (a dispatcher could fail a bogus one at once, ending the run).
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y", command=["sleep", "30"]))
    other_token = loop_thread.run(plane.tokens.create("tenant", tenant.name))
    stub = actions_pb2_grpc.ActionServiceStub(channel)
    watch = stub.WatchChildren(
        pb.WatchChildrenRequest(run=run.name, parent=run.root), metadata=bearer(tenant.token), timeout=10
    )
    assert next(watch).HasField("replay_done")

    loop_thread.run(plane.tokens.revoke(tenant.token))
    # The tenant's other token adds a child: the revoked watch must not deliver it.
    child = pb.ActionSpec(name="c1", task_ref="module:x:y")
    stub.SubmitBatch(
        pb.SubmitBatchRequest(run=run.name, parent=run.root, actions=[child]), metadata=bearer(other_token)
    )
    code, took, delivered = end_of(watch)

    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, took, delivered)
    assert took < REACH_SECONDS
    with Client(ClientConfig(endpoint=tenant.client.config.endpoint, token=other_token)) as other:
        other.abort_run(run.name)
