"""WatchMany: one stream per worker carrying the child events of every parent it runs.

The client adds a parent (with that parent's own action token) when it starts
awaiting children and removes it when done. The server follows every added
parent's event stream with one blocking XREAD over all of them (all of one
tenant, so one hash slot), then reads the changes of those that have some with
the same packed script as WatchChildren (events.lua), replaying current state
for a new parent or one whose events were trimmed past its cursor.

Each parent stays authorized by its own token: an add is checked like a
WatchChildren call of that token, restricted to the token's own children, and
every token is re-resolved every RECHECK_SECONDS. A refused add or a token that
stops resolving ends that parent's subscription with a status; the stream and
the other parents go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import grpc
from google.rpc import code_pb2

from fanout.quota.actions import ActionStore, EventsTrimmed
from fanout.quota.errors import StoreError
from fanout.quota.tokens import Principal, TokenStore
from fanout.server import metrics, validation
from fanout.server.auth import RECHECK_SECONDS, authorize, check_action_scope
from fanout.server.concurrency import at_most
from fanout.server.status import ServiceError, invalid, not_found, to_rpc_status
from fanout.server.watch_events import WATCH_EVENT_BYTES, replay, valid_cursor, watch_events
from fanout.v1 import actions_pb2 as pb

# A watch's blocking read waits this long for a change; the Redis socket timeout
# (app.connect_redis) is derived from it and stays longer. Each read that comes
# back empty sends a heartbeat, so a quiet watch shows it is alive this often.
WATCH_BLOCK_MS = 2_000
ADD_ROLES = frozenset({"tenant", "action"})
# Parents one stream follows at once: a worker runs at most its pool's concurrency
# (validation bounds it far below this), and one XREAD names them all.
MAX_PARENTS = 10_000
# Redis reads of one stream's parents in flight at once (their changes, their tokens' rechecks).
READS_AT_ONCE = 8


@dataclass
class _Subscription:
    id: int
    token: str
    who: Principal
    request: pb.WatchChildrenRequest  # run, parent, batched: what watch_events and replay take
    cursor: str


class WatchMany:
    def __init__(self, store: ActionStore, tokens: TokenStore) -> None:
        self._store = store
        self._tokens = tokens
        self._tenant = ""
        self._subs: dict[int, _Subscription] = {}
        self._inbox: list[pb.WatchManyRequest] = []
        self._arrived = asyncio.Event()
        self._closed = False

    async def serve(self, requests: AsyncIterator[pb.WatchManyRequest]) -> AsyncIterator[pb.WatchManyResponse]:
        reader = asyncio.create_task(self._read(requests))
        recheck_at = time.monotonic() + RECHECK_SECONDS
        try:
            while True:
                out: list[pb.WatchManyEvent] = []
                self._arrived.clear()
                inbox, self._inbox = self._inbox, []
                for message in inbox:
                    if message.HasField("add"):
                        out += await self._add(message.add)
                    else:
                        self._subs.pop(message.remove.id, None)
                if self._closed and not self._inbox:
                    for response in _responses(out) if out else ():
                        yield response
                    return
                if time.monotonic() >= recheck_at:
                    out += await self._recheck()
                    recheck_at = time.monotonic() + RECHECK_SECONDS
                if out:  # answer adds and ends at once, before waiting for changes
                    for response in _responses(out):
                        yield response
                    continue
                wait_ms = max(1, min(WATCH_BLOCK_MS, int((recheck_at - time.monotonic()) * 1000)))
                changed, interrupted = await self._wait(wait_ms)
                for events in await at_most(READS_AT_ONCE, [self._changes(sub) for sub in changed]):
                    out += events
                if out or not interrupted:  # nothing after a full wait: a heartbeat
                    for response in _responses(out):
                        yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, requests: AsyncIterator[pb.WatchManyRequest]) -> None:
        try:
            async for message in requests:
                self._inbox.append(message)
                if message.HasField("add"):  # a remove can wait for the next read: only an add must join it
                    self._arrived.set()
        finally:
            self._closed = True
            self._arrived.set()

    async def _add(self, add: pb.WatchAdd) -> list[pb.WatchManyEvent]:
        try:
            who = await authorize(self._tokens, add.action_token, ADD_ROLES)
            validation.run_name(add.run)
            validation.action_name(add.parent, "parent")
            # An action token watches only its own children here (a worker adds the parents it runs).
            check_action_scope(who, add.run, add.parent)
            if self._tenant and who.tenant != self._tenant:
                raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, "one WatchMany stream serves one tenant")
            if add.cursor and not valid_cursor(add.cursor):
                raise invalid(f"cursor {add.cursor[:40]!r} is not a cursor this server handed out")
            if add.id in self._subs or any(
                s.request.run == add.run and s.request.parent == add.parent for s in self._subs.values()
            ):
                raise invalid(f"subscription {add.id} (or parent {add.run}/{add.parent}) is already on this stream")
            if len(self._subs) >= MAX_PARENTS:
                raise invalid(f"one WatchMany stream follows at most {MAX_PARENTS} parents")
            if not await self._store.exists(who.tenant, add.run):
                raise not_found(f"run {add.run!r} not found")
        except Exception as exc:
            return [_ended(add.id, exc)]
        self._tenant = who.tenant
        metrics.WATCH_PARENTS_ADDED.inc()
        request = pb.WatchChildrenRequest(run=add.run, parent=add.parent, batched=True)
        sub = _Subscription(add.id, add.action_token, who, request, add.cursor)
        self._subs[add.id] = sub
        if sub.cursor:
            return []
        return [_event(sub.id, event) async for event in self._replay(sub)]

    async def _replay(self, sub: _Subscription) -> AsyncIterator[pb.WatchEvent]:
        async for event in replay(self._store, self._tenant, sub.request, sub.cursor):
            sub.cursor = event.cursor
            yield event

    async def _changes(self, sub: _Subscription) -> list[pb.WatchManyEvent]:
        return [_event(sub.id, event) async for event in self._follow(sub)]

    async def _follow(self, sub: _Subscription) -> AsyncIterator[pb.WatchEvent]:
        """The changes of one parent after its cursor (the XREAD said there are some)."""
        try:
            changes = await self._store.events(self._tenant, sub.request.run, sub.request.parent, sub.cursor, 0)
        except EventsTrimmed:
            # Behind its capped event stream: current state again, as WatchChildren does.
            async for event in self._replay(sub):
                yield event
            return
        for event in watch_events(sub.request, changes):
            yield event
        if changes:
            sub.cursor = changes[-1][0]

    async def _wait(self, wait_ms: int) -> tuple[list[_Subscription], bool]:
        """The parents with changes, waiting up to wait_ms; interrupted (True) when the client sent something."""
        if self._arrived.is_set():
            return [], True
        arrived = asyncio.ensure_future(self._arrived.wait())
        read: asyncio.Future[set[tuple[str, str]]] | None = None
        try:
            if not self._subs:
                await asyncio.wait({arrived}, timeout=wait_ms / 1000)
                return [], self._arrived.is_set()
            by_key = {(s.request.run, s.request.parent): s for s in self._subs.values()}
            cursors = {key: sub.cursor for key, sub in by_key.items()}
            read = asyncio.ensure_future(self._store.ready(self._tenant, cursors, wait_ms))
            await asyncio.wait({read, arrived}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():  # a new parent must join the read: ask again at once
                return [], True
            return [by_key[key] for key in read.result() if by_key[key].id in self._subs], self._arrived.is_set()
        finally:
            for task in (arrived, read):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _recheck(self) -> list[pb.WatchManyEvent]:
        """Ends the subscriptions whose tokens no longer resolve to what they did (revoked, attempt over)."""
        subs = list(self._subs.values())
        ended = []
        for sub, who in zip(subs, await at_most(READS_AT_ONCE, [self._resolve(s) for s in subs]), strict=True):
            if who is not False and who != sub.who and self._subs.pop(sub.id, None) is not None:
                revoked = ServiceError(grpc.StatusCode.UNAUTHENTICATED, "the token was revoked or has expired")
                ended.append(_ended(sub.id, revoked))
        return ended

    async def _resolve(self, sub: _Subscription) -> Principal | Literal[False] | None:
        """What the token resolves to now; None when revoked or expired; False when Redis did not answer."""
        try:
            return await self._tokens.resolve(sub.token)
        except StoreError:
            return False  # Redis unreachable: the stream's own reads fail closed; ask again later


def _event(sub_id: int, event: pb.WatchEvent) -> pb.WatchManyEvent:
    return pb.WatchManyEvent(id=sub_id, event=event)


def _ended(sub_id: int, exc: Exception) -> pb.WatchManyEvent:
    status = to_rpc_status(exc)
    if status is None:
        raise exc
    metrics.RPC_ERRORS.labels(code=code_pb2.Code.Name(status.code)).inc()
    return pb.WatchManyEvent(id=sub_id, ended=status.SerializeToString())


def _responses(events: list[pb.WatchManyEvent]) -> list[pb.WatchManyResponse]:
    """Events in messages of about WATCH_EVENT_BYTES at most; none is one empty message (a heartbeat)."""
    responses = [pb.WatchManyResponse()]
    size = 0
    for event in events:
        cost = event.ByteSize()
        if size and size + cost > WATCH_EVENT_BYTES:
            responses.append(pb.WatchManyResponse())
            size = 0
        responses[-1].events.append(event)
        size += cost
    return responses
