"""What every watch shares: child changes as WatchEvents, the paged replay of current state, cursors.

Used by WatchChildren (one parent per stream) and WatchMany (many parents on one stream).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

from fanout.quota.actions import ActionStore, ChildState
from fanout.v1 import actions_pb2 as pb

# A watch that asked with_groups remembers this many children's groups; past it, it forgets them all
# and looks them up again (a group never changes, so this costs reads, never correctness).
GROUPS_REMEMBERED = 100_000

# A batched watch event holds changes of about this many bytes at most (results may be big),
# well under the default 4 MiB a gRPC client accepts.
WATCH_EVENT_BYTES = 1 << 20


def child_status(run: str, parent: str, child: ChildState) -> pb.ActionStatus:
    status = pb.ActionStatus(run=run, name=child.name, parent=parent, phase=child.phase, attempt=child.attempt)
    if child.result:
        status.result.ParseFromString(child.result)
    return status


def watch_events(request: pb.WatchChildrenRequest, changes: list[tuple[str, ChildState]]) -> Iterator[pb.WatchEvent]:
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


class Groups:
    """The groups of one watch's children (ActionStatus.group), read from their specs once per child."""

    def __init__(self, store: ActionStore, tenant: str, run: str) -> None:
        self._store = store
        self._tenant = tenant
        self._run = run
        self._known: dict[str, str] = {}

    async def fill(self, event: pb.WatchEvent) -> None:
        statuses = [*event.updates, *([event.update] if event.HasField("update") else [])]
        unknown = list({s.name for s in statuses if s.name not in self._known})
        if unknown:
            if len(self._known) + len(unknown) > GROUPS_REMEMBERED:
                self._known.clear()
            self._known.update(await self._store.groups(self._tenant, self._run, unknown))
        for status in statuses:
            status.group = self._known.get(status.name, "")


async def replay(
    store: ActionStore, tenant: str, request: pb.WatchChildrenRequest, resume_from: str = ""
) -> AsyncIterator[pb.WatchEvent]:
    """Current state of the children, then replay_done with the cursor to follow from.

    The replay pages through the children, a short script per page (a parent may have
    millions); live events follow from the first page's cursor, so none is missed. Until
    replay_done, events carry `resume_from`, the cursor the watcher had before (none for a
    first replay): a stream dropped halfway resumes from there and replays again. The first
    page's cursor would skip the children not replayed yet that had ended before it.
    """
    page = await store.snapshot(tenant, request.run, request.parent)
    cursor = page.cursor
    while True:
        for event in watch_events(request, [(resume_from, child) for child in page.children]):
            yield event
        if page.next_offset is None:
            break
        page = await store.snapshot(tenant, request.run, request.parent, page.next_offset)
    yield pb.WatchEvent(replay_done=pb.ReplayDone(), cursor=cursor)


# A Redis stream id: two unsigned 64-bit numbers in ASCII digits. str.isdigit() would let
# '١٢' or '²' through, and Redis would answer an error the client cannot act on.
_CURSOR_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_U64_MAX = (1 << 64) - 1


def valid_cursor(cursor: str) -> bool:
    match = _CURSOR_RE.fullmatch(cursor)  # not match(): "$" would accept a trailing newline
    return match is not None and all(int(part) <= _U64_MAX for part in match.groups())
