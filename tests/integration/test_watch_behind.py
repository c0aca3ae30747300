"""A watch that falls behind its parent's capped event stream still learns every change.

Each parent's event stream is capped (keys.EVENTS_MAXLEN, approximately), so a
watcher that lags by more than the cap would resume from a cursor whose
following entries were trimmed away, and wait forever for children that had
long finished. The server must notice and replay current state instead, and
a watch dropped halfway through that replay must resume it, not skip it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fanout.dispatch.dispatcher import Dispatcher
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant
from tests.helpers import eventually

CHILDREN = 250  # a few hundred events: enough for approximate trimming to drop whole stream nodes


@dataclass(frozen=True)
class Behind:
    """A run whose children all ended after a watch's cursor, and its capped stream trimmed past it."""

    run: str
    parent: str
    children: set[str]
    cursor: str


@pytest.fixture
def behind(
    tenant: Tenant, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch, dispatcher: Dispatcher
) -> Iterator[Behind]:
    monkeypatch.setattr(plane.actions, "events_maxlen", 20)
    run = tenant.client.create_run(pb.ActionSpec(task_ref="sleeper", command=["sleep", "60"]))
    try:
        children = [pb.ActionSpec(name=f"c{i}", task_ref="true", command=["true"]) for i in range(CHILDREN)]
        tenant.client.submit_batch(run.name, run.root, children)
        replay = tenant.client.watch_children(run.name, run.root, timeout=30)
        cursor = next(e.cursor for e in replay if e.HasField("replay_done"))
        replay.close()
        eventually(lambda: _succeeded(tenant, run.name, run.root) == CHILDREN, timeout=60, interval=0.5)
        yield Behind(run.name, run.root, {c.name for c in children}, cursor)
    finally:
        tenant.client.abort_run(run.name)


def test_a_watch_resumed_from_a_cursor_the_stream_trimmed_past_gets_every_child(tenant: Tenant, behind: Behind) -> None:
    # Resume from the old cursor: every child's end must arrive before the watch goes quiet.
    seen = _ended(tenant.client.watch_children(behind.run, behind.parent, cursor=behind.cursor, timeout=30))
    assert seen == behind.children


def test_a_watch_dropped_halfway_through_its_replay_resumes_without_missing_a_child(
    tenant: Tenant, behind: Behind
) -> None:
    """The replay's events must not carry a cursor past the children it has yet to send."""
    # Behind the trimmed stream, the watch replays; it drops after the replay's first child.
    replay = tenant.client.watch_children(behind.run, behind.parent, cursor=behind.cursor, timeout=30)
    first = next(replay)
    replay.close()
    assert first.HasField("update")

    seen = _ended(tenant.client.watch_children(behind.run, behind.parent, cursor=first.cursor, timeout=30))
    assert seen | {first.update.name} == behind.children


def _ended(events: Iterator[pb.WatchEvent]) -> set[str]:
    """The children seen succeeding, until the watch goes quiet (its first heartbeat)."""
    seen: set[str] = set()
    for event in events:
        if event.HasField("update") and event.update.phase == pb.SUCCEEDED:
            seen.add(event.update.name)
        if not event.HasField("update") and not event.HasField("replay_done"):
            break  # a heartbeat: nothing more is coming
    return seen


def _succeeded(tenant: Tenant, run: str, parent: str) -> int:
    watch = tenant.client.watch_children(run, parent, timeout=30)
    return sum(1 for e in _until_replay_done(watch) if e.update.phase == pb.SUCCEEDED)


def _until_replay_done(events: Iterator[pb.WatchEvent]) -> Iterator[pb.WatchEvent]:
    for event in events:
        if event.HasField("replay_done"):
            return
        yield event
