"""A worker's parents share one watch stream and one submission per event-loop turn (fanout.hub).

Everything is real: the session's Redis, gRPC server and dispatcher, whose pool
starts `python -m fanout.dispatch.worker` processes. What is shared is read on
the server's side, from its metrics (the control plane runs in this process),
or seen on a WatchMany / SubmitMany call this test makes itself with action
tokens the server's own token store mints for actions the dispatcher runs.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from prometheus_client import REGISTRY

from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server import metrics
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc
from tests.conftest import TASKS_FILE, Tenant
from tests.helpers import LoopThread, eventually

M = TypeVar("M", bound=Message)

pytestmark = pytest.mark.usefixtures("dispatcher")


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def shared_counts(tenant: str) -> dict[str, float]:
    """What the server counted: submit calls and watch streams by RPC, parents added, the tenant's admissions."""
    return {
        "SubmitMany": counter("fanout_submit_calls_total", rpc="SubmitMany"),
        "SubmitBatch": counter("fanout_submit_calls_total", rpc="SubmitBatch"),
        "WatchMany": counter("fanout_watch_streams_opened_total", rpc="WatchMany"),
        "WatchChildren": counter("fanout_watch_streams_opened_total", rpc="WatchChildren"),
        "parents": counter("fanout_watch_many_parents_added_total"),
        "admitted": counter("fanout_actions_admitted_total", tenant=metrics.tenant_label(tenant)),
    }


def since(tenant: str, before: dict[str, float]) -> dict[str, float]:
    return {key: value - before[key] for key, value in shared_counts(tenant).items()}


def test_parents_in_one_worker_share_one_watch_stream_and_submit_together(tenant: Tenant) -> None:
    parents, children = 30, 20
    before = shared_counts(tenant.name)

    sums = start_run(tenant.client, load_task(f"file:{TASKS_FILE}:mux_tree"), parents, children).wait(120).outputs()

    assert sums == [sum(range(children))] * parents  # the nested fanout completed
    seen = since(tenant.name, before)
    assert seen["admitted"] == 1 + parents + parents * children
    assert seen["parents"] == 1 + parents  # the root and every parent joined a WatchMany stream ...
    assert seen["WatchMany"] == 1  # ... the worker's one stream (replicas=1)
    # The waiting test client watches its run's root; the worker opened no WatchChildren.
    assert seen["WatchChildren"] <= 1
    # 31 parents submitted in far fewer calls than one per parent: those that start in one turn
    # (one frame of leases from the dispatcher) share a call. (Here: 2, the root's and the parents'.)
    assert seen["SubmitBatch"] == 0
    assert 1 <= seen["SubmitMany"] <= parents // 3, seen


# ---- WatchMany and SubmitMany called directly, with the tokens of actions the dispatcher runs ----


@pytest.fixture
def stub(endpoint: str) -> Iterator[actions_pb2_grpc.ActionServiceStub]:
    with grpc.insecure_channel(endpoint) as channel:
        yield actions_pb2_grpc.ActionServiceStub(channel)


def sleeper(name: str, seconds: float) -> pb.ActionSpec:
    return pb.ActionSpec(name=name, command=["sleep", str(seconds)])


def running_token(tenant: Tenant, plane: ControlPlane, loop_thread: LoopThread, run: str, name: str) -> str:
    """The token the server mints for the action's attempt, once the dispatcher runs it."""
    eventually(lambda: tenant.client.get_action(run, name).phase == pb.RUNNING, timeout=15)
    attempt = tenant.client.get_action(run, name).attempt
    return plane.tokens.mint_action_token(tenant.name, run, name, attempt)


class ManyWatch:
    """A WatchMany call this test drives: adds and removes in, events by subscription id out."""

    def __init__(self, stub: actions_pb2_grpc.ActionServiceStub) -> None:
        self._outbox: queue.Queue[pb.WatchManyRequest | None] = queue.Queue()
        self._call = stub.WatchMany(iter(self._outbox.get, None), timeout=60)
        self._unread: list[pb.WatchManyEvent] = []

    def add(self, sub_id: int, token: str, run: str, parent: str, cursor: str = "") -> None:
        self._outbox.put(
            pb.WatchManyRequest(add=pb.WatchAdd(id=sub_id, action_token=token, run=run, parent=parent, cursor=cursor))
        )

    def next_event(self, sub_id: int, timeout: float = 20) -> pb.WatchManyEvent:
        """The next event of `sub_id`, skipping heartbeats and other subscriptions' events."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self._unread:
                if event.id == sub_id:
                    self._unread.remove(event)
                    return event
            self._unread += next(self._call).events
        raise AssertionError(f"no event for subscription {sub_id} in {timeout}s")

    def close(self) -> None:
        self._outbox.put(None)
        self._call.cancel()


def ended_code(event: pb.WatchManyEvent) -> int:
    assert event.ended, event
    return status_pb2.Status.FromString(event.ended).code


def test_a_stream_admits_only_parents_whose_own_tokens_it_holds_and_one_end_disturbs_no_other(
    tenant: Tenant, plane: ControlPlane, loop_thread: LoopThread, stub: actions_pb2_grpc.ActionServiceStub
) -> None:
    run = tenant.client.create_run(sleeper("root", 30)).name
    other = tenant.client.create_run(sleeper("root", 30)).name
    root_token = running_token(tenant, plane, loop_thread, run, "root")
    tenant.client.submit_batch(run, "root", [sleeper("short", 5)])
    short_token = running_token(tenant, plane, loop_thread, run, "short")
    watch = ManyWatch(stub)
    try:
        watch.add(1, root_token, run, "root")
        replayed = [watch.next_event(1), watch.next_event(1)]
        assert [u.name for u in replayed[0].event.updates] == ["short"]
        assert replayed[1].event.HasField("replay_done")

        watch.add(2, short_token, run, "root")  # a token of another action of the run
        assert ended_code(watch.next_event(2)) == code_pb2.PERMISSION_DENIED
        watch.add(3, "fa1.forged.token", run, "root")
        assert ended_code(watch.next_event(3)) == code_pb2.UNAUTHENTICATED
        watch.add(4, root_token, other, "root")  # its own name, another run
        assert ended_code(watch.next_event(4)) == code_pb2.NOT_FOUND
        watch.add(5, short_token, run, "short")  # its own children: allowed, until its attempt ends
        assert watch.next_event(5).event.HasField("replay_done")
        # "short" finishes after 5 seconds: its token expires and its subscription ends, alone.
        assert ended_code(watch.next_event(5, timeout=30)) == code_pb2.UNAUTHENTICATED

        # The root's subscription goes on: it sees short's end, then a child added now start.
        tenant.client.submit_batch(run, "root", [sleeper("later", 30)])
        seen: list[tuple[str, int]] = []
        while "later" not in {name for name, _ in seen}:
            seen += [(u.name, u.phase) for u in watch.next_event(1).event.updates]
        assert ("short", pb.SUCCEEDED) in seen
    finally:
        watch.close()
        tenant.client.abort_run(run)
        tenant.client.abort_run(other)


@pytest.mark.parametrize("events_maxlen", [100_000, 20])
def test_a_parent_added_from_its_first_event_learns_every_child_that_ended_before(
    tenant: Tenant,
    plane: ControlPlane,
    loop_thread: LoopThread,
    stub: actions_pb2_grpc.ActionServiceStub,
    monkeypatch: pytest.MonkeyPatch,
    events_maxlen: int,
) -> None:
    """How a worker adds a new parent (cursor "0-0"): its children's events from the first; from a
    stream trimmed past its first events (a cap of 20), the server replays current state instead."""
    monkeypatch.setattr(plane.actions, "events_maxlen", events_maxlen)
    run = tenant.client.create_run(sleeper("root", 30)).name
    token = running_token(tenant, plane, loop_thread, run, "root")
    names = [f"c{i}" for i in range(250)]
    tenant.client.submit_batch(run, "root", [pb.ActionSpec(name=n, command=["true"]) for n in names])
    eventually(lambda: tenant.client.get_run(run).action_count == 1 + len(names), timeout=15)
    eventually(lambda: all(tenant.client.get_action(run, n).phase == pb.SUCCEEDED for n in names[-5:]), timeout=60)
    watch = ManyWatch(stub)
    try:
        watch.add(1, token, run, "root", cursor="0-0")
        ended: set[str] = set()
        cursors: set[str] = set()
        replayed = False
        while ended != set(names) or (events_maxlen == 20 and not replayed):
            event = watch.next_event(1).event
            ended |= {u.name for u in event.updates if u.phase == pb.SUCCEEDED}
            cursors |= {event.cursor} if event.updates else set()
            replayed = replayed or event.HasField("replay_done")
        if events_maxlen == 20:
            assert cursors == {"0-0"}  # a replay's events say where to resume it: where it began
        else:
            assert "0-0" not in cursors and not replayed  # followed: each event's cursor is its own
    finally:
        watch.close()
        tenant.client.abort_run(run)


def details(error: bytes, kind: type[M]) -> list[M]:
    """The details of one kind in a section's serialized google.rpc.Status."""
    found = []
    for detail in status_pb2.Status.FromString(error).details:
        if detail.Is(kind.DESCRIPTOR):
            found.append(kind())
            detail.Unpack(found[-1])
    return found


def bad_request_fields(error: bytes) -> list[str]:
    return [v.field for bad in details(error, error_details_pb2.BadRequest) for v in bad.field_violations]


def quota_subjects(error: bytes) -> list[str]:
    return [v.subject for failure in details(error, error_details_pb2.QuotaFailure) for v in failure.violations]


def test_a_refused_section_fails_alone_and_the_others_in_the_call_are_admitted(
    tenant: Tenant, plane: ControlPlane, loop_thread: LoopThread, stub: actions_pb2_grpc.ActionServiceStub
) -> None:
    tenant.set_limits(max_fanout=4)
    runs = [tenant.client.create_run(sleeper("root", 30)).name for _ in range(4)]
    tokens = [running_token(tenant, plane, loop_thread, run, "root") for run in runs]

    def section(i: int, specs: list[pb.ActionSpec], token: str | None = None) -> pb.SubmitSection:
        batch = pb.SubmitBatchRequest(run=runs[i], parent="root", actions=specs)
        return pb.SubmitSection(action_token=token or tokens[i], batch=batch)

    before = shared_counts(tenant.name)
    try:
        reply = stub.SubmitMany(
            pb.SubmitManyRequest(
                sections=[
                    section(0, [sleeper(f"c{i}", 30) for i in range(5)]),  # 1 + 5 > max_fanout 4
                    section(1, [sleeper("c0", 30), sleeper("c1", 30)]),
                    section(2, [sleeper("ok", 30), sleeper("bad name!", 30)]),
                    section(3, [sleeper("c0", 30)], token=tokens[1]),  # another action's token
                ]
            ),
            timeout=10,
        )
        results: list[Any] = list(reply.results)
        assert quota_subjects(results[0].error) == ["max_fanout"]
        assert status_pb2.Status.FromString(results[0].error).code == code_pb2.RESOURCE_EXHAUSTED
        assert results[1].admitted.admitted == 2 and not results[1].error
        assert bad_request_fields(results[2].error) == ["actions[1].name"]
        assert status_pb2.Status.FromString(results[3].error).code == code_pb2.NOT_FOUND
        assert since(tenant.name, before)["SubmitMany"] == 1
        # Refused sections wrote nothing.
        assert [tenant.client.get_run(run).action_count for run in runs] == [1, 3, 1, 1]
    finally:
        for run in runs:
            tenant.client.abort_run(run)


def test_a_parent_over_its_runs_fanout_fails_alone_beside_another_parent_in_the_worker(tenant: Tenant) -> None:
    # Root, two parents, the small parent's 3 children: 6 fit; the big parent's 50 do not.
    tenant.set_limits(max_fanout=8)
    run = start_run(tenant.client, load_task(f"file:{TASKS_FILE}:mux_quota_pair"), 50, 3)
    assert run.wait(60).outputs() == ["FanoutLimitExceeded", 3]
