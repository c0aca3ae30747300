"""One process's shared submission and watch machinery: every parent it runs goes through it.

A worker runs many parents on one client. Children submitted in one turn of
the event loop, by any of them, go out in one SubmitMany (split only by the
batch caps; at most MAX_SUBMITS_IN_FLIGHT calls at once, the rest wait in
order), each parent's section carrying that parent's own action token;
a refused section fails or retries only its parent's children, exactly as a
SubmitBatch of its own would. One WatchMany stream carries the child events
of every parent: a parent is added (with its token, from its first event) when
it first awaits a child and removed when it finishes; after a disconnect the
stream is opened again and every parent re-added from its cursor, so nothing
is missed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import grpc
from google.rpc import status_pb2

from fanout import errors
from fanout.client import AsyncClient, from_status, translate
from fanout.v1 import actions_pb2 as pb

log = logging.getLogger(__name__)

# Actions per SubmitMany: big enough that a call's fixed cost is nothing per action, small enough
# that one call does not hold the server's event loop (and other tenants' calls) for long.
MAX_BATCH = 2_000
# The first call of a turn carries fewer: admitted sooner, its actions start running while the server
# admits the rest (a big turn's first 2,000 kept the dispatcher idle for ~90 ms).
FIRST_BATCH = 250
# Well under the server's default max_batch_bytes (64 MiB), so big inputs split instead of being refused.
MAX_BATCH_BYTES = 16 << 20
# SubmitMany calls one process has in flight; the rest wait here, in order. Enough to keep a server
# admitting; unbounded, a gather of a million children sent 500 calls at once, and the server's
# admissions crowded out everything else it does (a dispatcher's lease renewals above all).
MAX_SUBMITS_IN_FLIGHT = 4
# How long the watch stream stays open with no parent on it: a worker's parents come in waves.
IDLE_STREAM_SECONDS = 5.0
# Names per AbortAction call (the server's cap), and how long a parent waits for one.
MAX_ABORT_NAMES = 1_000
ABORT_TIMEOUT_SECONDS = 10.0
# The cursor before a stream's first event.
FROM_THE_START = "0-0"
# How the server names one action of a refused batch (google.rpc.BadRequest field).
_ACTION_FIELD = re.compile(r"actions\[(\d+)\]")


class Parent(Protocol):
    """What the hub needs of a parent (the controller of one running action)."""

    run: str
    parent: str

    @property
    def credential(self) -> str: ...

    def settle(self, status: pb.ActionStatus) -> None: ...

    def fail(self, names: list[str], exc: Exception) -> None: ...

    def fail_waiting(self, exc: Exception) -> None: ...


class Child(NamedTuple):
    """A child to submit: its own name and inputs, and the rest of its spec, shared with its siblings.

    The spec is put together only as its call is built (_request), straight into the request: a turn
    that calls a million children makes no spec per child, and its calls go out sooner.
    """

    name: str
    inputs: bytes
    template: pb.ActionSpec  # every field but name and inputs
    template_size: int  # its serialized size

    def size(self) -> int:
        """Its spec's serialized size, near enough to split calls by (the two fields' tags and lengths)."""
        return self.template_size + len(self.name) + len(self.inputs) + 8


@dataclass
class _Section:
    parent: Parent
    children: list[Child]
    delay: float = 0.1  # the next wait when the control plane is unavailable


@dataclass
class _Subscription:
    parent: Parent
    # A parent's events from the first: a new parent's children have not all ended yet, and
    # following their changes costs a fraction of a replay of every child's state (the server
    # replays anyway if the stream was trimmed). A resumed stream goes on from the last event.
    cursor: str = FROM_THE_START

    def add(self, sub_id: int) -> pb.WatchManyRequest:
        add = pb.WatchAdd(id=sub_id, action_token=self.parent.credential, run=self.parent.run, cursor=self.cursor)
        add.parent = self.parent.parent
        return pb.WatchManyRequest(add=add)


@dataclass
class _Stream:
    outbox: asyncio.Queue[pb.WatchManyRequest] = field(default_factory=asyncio.Queue)


_HUBS: weakref.WeakKeyDictionary[AsyncClient, Hub] = weakref.WeakKeyDictionary()


class Hub:
    @staticmethod
    def of(client: AsyncClient) -> Hub:
        """The hub of `client`: all parents on one client (one worker) share it."""
        hub = _HUBS.get(client)
        if hub is None:
            hub = _HUBS[client] = Hub(client)
        return hub

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._pending: list[_Section] = []
        self._pending_count = 0  # children in _pending
        self._sent_early = 0  # calls this turn sent before its end (see submit)
        self._early_failed = False  # call_now() failed once: no more sends during a turn
        self._flush_scheduled = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._sending: set[asyncio.Future[None]] = set()  # SubmitMany calls in flight
        self._queued: deque[list[_Section]] = deque()  # calls waiting for one of those to end
        self._aborts: dict[int, tuple[Parent, list[str]]] = {}  # id(parent) -> names, this turn
        self._abort_scheduled = False
        self._ids = itertools.count(1)
        self._subs: dict[int, _Subscription] = {}
        self._ids_of: dict[int, int] = {}  # id(parent) -> subscription id
        self._stream: _Stream | None = None
        self._follow: asyncio.Task[None] | None = None
        # Set when the worker itself stops (see detach): its parents' cancellations abort nothing.
        self._detached = False

    # Submission --------------------------------------------------------

    def submit(self, parent: Parent, children: list[Child]) -> None:
        last = self._pending[-1] if self._pending else None
        if last is not None and last.parent is parent:
            last.children += children  # a gather's calls, one after another: one section, not one per child
        else:
            self._pending.append(_Section(parent, list(children)))
        self._pending_count += len(children)
        if self._pending_count >= (MAX_BATCH if self._sent_early else FIRST_BATCH):
            self._send_early()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # call_soon runs after every coroutine already scheduled in this turn,
            # so the calls of every parent's asyncio.gather in this turn share a batch.
            asyncio.get_running_loop().call_soon(self._flush)

    def _send_early(self) -> None:
        """Send what this turn called so far, now: a big turn is still running the calls after it.

        A gather of 10,000 children runs all their first steps in one turn of the loop, ~0.1 s of
        it; sent at its end, the server, the dispatcher and the workers idle meanwhile. So once a
        call's worth is pending (a small one first: it starts running soonest), it goes out at once
        through call_now(), while this turn goes on. The rest goes at the turn's end, as usual.

        At most MAX_SUBMITS_IN_FLIGHT calls go early: their replies are read only after the turn,
        and so is the parents' watch opened. Sending on through a turn of a million calls (~15 s
        here) left most children ended before their parent watched them, and the watch's replay
        of their state took the server three times the CPU of following them live.
        """
        if len(self._sending) >= MAX_SUBMITS_IN_FLIGHT or self._queued:
            return  # as many calls as we allow are in flight: this turn's end sends the rest in order
        first, *rest = _calls(_by_parent(self._pending), MAX_BATCH if self._sent_early else FIRST_BATCH)
        self._pending = [section for call in rest for section in call]  # over the byte cap: later
        self._pending_count = sum(len(section.children) for section in self._pending)
        self._sent_early += 1
        started = None
        if not self._early_failed:
            try:
                started = self._client.call_now("SubmitMany", _request(first))
            except Exception:  # e.g. no plain channel can be made here: sent the usual way, after the turn
                log.exception("cannot send children during the turn; they go at its end from now on")
                self._early_failed = True
        self._track_send(self._send(first, started))

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending, self._pending_count = self._pending, [], 0
        first = MAX_BATCH if self._sent_early else FIRST_BATCH  # a small first call, unless one went already
        self._sent_early = 0
        self._queued.extend(_calls(_by_parent(pending), first))
        while self._queued and len(self._sending) < MAX_SUBMITS_IN_FLIGHT:
            self._track_send(self._send(self._queued.popleft()))

    def _track_send(self, send: Coroutine[Any, Any, None]) -> None:
        task = self._spawn(send)
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Future[None]) -> None:
        self._sending.discard(task)
        if self._queued and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send(self, sections: list[_Section], started: asyncio.Future[Any] | None = None) -> None:
        """Send one call (or take the reply of one call_now() `started`), and act on each section's answer."""
        try:
            if started is not None:
                reply = await started
            else:
                reply = await self._client.call(self._client.actions.SubmitMany, _request(sections))
        except errors.FanoutError as exc:  # the call as a whole: each section as if refused alone
            for section in sections:
                self._refused(section, exc)
            return
        for section, result in zip(sections, reply.results, strict=True):
            if result.error:
                self._refused(section, from_status(status_pb2.Status.FromString(result.error)))

    def _refused(self, section: _Section, exc: errors.FanoutError) -> None:
        """What a parent's own SubmitBatch refused this way would do: fail, wait and retry, or drop the bad."""
        names = [child.name for child in section.children]
        if isinstance(exc, errors.FanoutLimitExceeded):
            section.parent.fail(names, exc)
        elif isinstance(exc, errors.QuotaExceeded):  # max_queued: wait for room, do not fail the run
            wait = exc.retry_after or section.delay
            log.info("queue full (%s); retrying %d actions in %.1fs", exc, len(names), wait)
            asyncio.get_running_loop().call_later(wait, self._requeue, section)
        elif isinstance(exc, errors.Unavailable):
            log.warning("control plane unavailable (%s); retrying in %.1fs", exc, section.delay)
            asyncio.get_running_loop().call_later(section.delay, self._requeue, section)
            section.delay = min(section.delay * 2, 5.0)
        elif isinstance(exc, errors.InvalidRequest) and (bad := refused_actions(section.children, exc)):
            for name, reason in bad.items():
                section.parent.fail([name], errors.InvalidRequest(reason, exc.violations))
            # The others were refused only with their siblings: send them again at once.
            rest = [child for child in section.children if child.name not in bad]
            if rest:
                self.submit(section.parent, rest)
        else:
            section.parent.fail(names, exc)

    def _requeue(self, section: _Section) -> None:
        self._pending.append(section)
        self._pending_count += len(section.children)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    # Abort -------------------------------------------------------------

    def detach(self) -> None:
        """The worker stops without its parents having ended (its dispatcher went away, or stopped it):
        their leases lapse and they run again, and the rerun parents find their children by name. So
        the cancellations that stopping brings must not abort those children on the server."""
        self._detached = True

    def abort(self, parent: Parent, names: list[str]) -> list[str]:
        """Abort children of `parent` whose await was cancelled: those of one turn in one AbortAction per parent.

        A child not sent yet is simply not sent. Returns the names that were sent, now to be aborted.
        """
        if self._detached:
            return []
        names = self._unsend(parent, names)
        if not names:
            return names
        _, queued = self._aborts.setdefault(id(parent), (parent, []))
        queued += names
        if not self._abort_scheduled:
            self._abort_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_aborts)
        return names

    async def abort_now(self, parent: Parent, names: list[str]) -> None:
        """Abort children of `parent` and wait for the answer (the parent is finishing)."""
        if self._detached:
            return
        names = self._unsend(parent, names)
        if names:
            await self._send_abort(parent, names)

    def _unsend(self, parent: Parent, names: list[str]) -> list[str]:
        """Drop `names` from the submissions not sent yet; returns those already sent (or on their way)."""
        wanted = set(names)
        for section in itertools.chain(self._pending, *self._queued):
            if section.parent is parent:
                kept = [child for child in section.children if child.name not in wanted]
                wanted -= {child.name for child in section.children} - {child.name for child in kept}
                section.children = kept
        self._pending = [section for section in self._pending if section.children]
        self._pending_count = sum(len(section.children) for section in self._pending)
        calls = (call for call in ([s for s in call if s.children] for call in self._queued) if call)
        self._queued = deque(calls)
        return [name for name in names if name in wanted]

    def _flush_aborts(self) -> None:
        self._abort_scheduled = False
        aborts, self._aborts = self._aborts, {}
        for parent, names in aborts.values():
            self._spawn(self._send_abort(parent, names))

    async def _send_abort(self, parent: Parent, names: list[str]) -> None:
        # A child must be admitted before it can be aborted: let the submissions in flight land first.
        if self._sending:
            await asyncio.wait(set(self._sending))
        for at in range(0, len(names), MAX_ABORT_NAMES):
            request = pb.AbortActionRequest(run=parent.run, names=names[at : at + MAX_ABORT_NAMES])
            request.reason = f"no longer awaited by {parent.parent}"
            try:
                await self._client.call(
                    self._client.actions.AbortAction, request, timeout=ABORT_TIMEOUT_SECONDS, token=parent.credential
                )
            except errors.FanoutError as exc:  # e.g. a child its submission never admitted; nothing to stop
                log.info("could not abort %d children of %s: %s", len(request.names), parent.parent, exc)

    # Watch -------------------------------------------------------------

    def watch(self, parent: Parent) -> None:
        """Follow the children of `parent` (again a no-op once it is followed)."""
        if id(parent) in self._ids_of:
            return
        sub_id = next(self._ids)
        self._ids_of[id(parent)] = sub_id
        sub = self._subs[sub_id] = _Subscription(parent)
        if self._follow is None or self._follow.done():
            self._follow = asyncio.ensure_future(self._run_stream())
        elif self._stream is not None:
            self._stream.outbox.put_nowait(sub.add(sub_id))

    def unwatch(self, parent: Parent) -> None:
        sub_id = self._ids_of.pop(id(parent), None)
        if sub_id is not None and self._subs.pop(sub_id, None) is not None and self._stream is not None:
            self._stream.outbox.put_nowait(pb.WatchManyRequest(remove=pb.WatchRemove(id=sub_id)))

    async def _run_stream(self) -> None:
        delay = 0.1
        idle_since = time.monotonic()
        while self._subs or time.monotonic() - idle_since < IDLE_STREAM_SECONDS:
            stream = self._stream = _Stream()
            for sub_id, sub in self._subs.items():  # everyone, from their cursors (after a reconnect)
                stream.outbox.put_nowait(sub.add(sub_id))
            call = self._client.actions.WatchMany(_requests(stream.outbox))
            try:
                async for response in call:
                    delay = 0.1
                    for event in response.events:
                        self._dispatch(event)
                    if self._subs:
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since >= IDLE_STREAM_SECONDS:
                        return
            except grpc.RpcError as rpc_error:
                exc = translate(rpc_error)
                if not self._subs:
                    return
                if not isinstance(exc, errors.Unavailable):
                    # Refused as a whole: no retry will help, and no waiter may hang on it.
                    for sub in list(self._subs.values()):
                        self.unwatch(sub.parent)
                        sub.parent.fail_waiting(exc)
                    return
                log.warning("watch interrupted (%s); resuming in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                self._stream = None
                call.cancel()

    def _dispatch(self, event: pb.WatchManyEvent) -> None:
        sub = self._subs.get(event.id)
        if sub is None:  # removed since: its events no longer matter
            return
        if event.ended:
            self.unwatch(sub.parent)
            sub.parent.fail_waiting(from_status(status_pb2.Status.FromString(event.ended)))
            return
        for status in event.event.updates:
            sub.parent.settle(status)
        if event.event.cursor:  # every event has one to resume from, a replay's too (see WatchEvent)
            sub.cursor = event.event.cursor

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._follow] if self._follow else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _HUBS.pop(self._client, None)


async def _requests(outbox: asyncio.Queue[pb.WatchManyRequest]) -> AsyncIterator[pb.WatchManyRequest]:
    while True:
        yield await outbox.get()


def _by_parent(sections: list[_Section]) -> list[_Section]:
    """One section per parent, its children in the order they were called: one admission each."""
    merged: dict[int, _Section] = {}
    for section in sections:
        into = merged.get(id(section.parent))
        if into is None:
            merged[id(section.parent)] = _Section(section.parent, list(section.children), section.delay)
        else:
            into.children += section.children
            into.delay = max(into.delay, section.delay)
    return list(merged.values())


def _request(sections: list[_Section]) -> pb.SubmitManyRequest:
    """One call's request: each child's spec put together from its template, in place."""
    request = pb.SubmitManyRequest()
    for section in sections:
        batch = request.sections.add(action_token=section.parent.credential).batch
        batch.run, batch.parent = section.parent.run, section.parent.parent
        add = batch.actions.add
        for child in section.children:
            spec = add()
            spec.CopyFrom(child.template)
            spec.name, spec.inputs = child.name, child.inputs
    return request


def _calls(sections: list[_Section], first: int | None = None) -> list[list[_Section]]:
    """The sections of one turn in SubmitMany-sized calls: at most MAX_BATCH actions and MAX_BATCH_BYTES each,
    and `first` (FIRST_BATCH unless given) in the first.

    A section too big for the room left in a call is split; its pieces are sections of the same parent.
    """
    calls: list[list[_Section]] = [[]]
    count = size = 0
    most = min(FIRST_BATCH if first is None else first, MAX_BATCH)
    for section in sections:
        piece: list[Child] = []
        for child in section.children:
            spec_size = child.size()
            if count and (count >= most or size + spec_size > MAX_BATCH_BYTES):
                most = MAX_BATCH
                if piece:
                    calls[-1].append(_Section(section.parent, piece, section.delay))
                    piece = []
                calls.append([])
                count = size = 0
            piece.append(child)
            count, size = count + 1, size + spec_size
        if piece:
            calls[-1].append(_Section(section.parent, piece, section.delay))
    return [call for call in calls if call]


def refused_actions(batch: list[Child], exc: errors.InvalidRequest) -> dict[str, str]:
    """Name -> reason for each action of the batch the server named as invalid."""
    bad: dict[str, str] = {}
    for field_name, description in exc.violations:
        match = _ACTION_FIELD.match(field_name)
        if match and int(match[1]) < len(batch):
            bad.setdefault(batch[int(match[1])].name, description)
    return bad
