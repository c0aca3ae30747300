"""Actions in Redis: admission, leasing, phase reports, reclaim, and watch reads.

Each public method that decides something is one Lua script on one tenant's
keys. Specs and results are opaque serialized protos here; this layer checks
names and counts, never payload contents.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio as aioredis
import redis.exceptions

from fanout.quota import blocking_reads, keys, phases
from fanout.quota.admission import Admission, Admitter, Batch
from fanout.quota.errors import NotFound, PermissionDenied, Unavailable
from fanout.quota.failclosed import fail_closed, raise_if_cancelling
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.scripts import Scripts
from fanout.v1 import actions_pb2 as pb

# One lease script pops or visits at most LEASE_WORK entries (stale ones included), so it
# stays short however many aborted entries wait; one lease call runs at most LEASE_CALLS.
LEASE_WORK = 1_000
LEASE_CALLS = 8
# A watch replays a parent's children a page per script: at most this many children, and
# results of about this many bytes (a child's result may be big).
SNAPSHOT_PAGE = 1_000
SNAPSHOT_PAGE_BYTES = 1 << 20
# A watch reads at most this many changes, and results of about this many bytes, per script.
EVENTS_PAGE = 1_000
EVENTS_PAGE_BYTES = 1 << 20
# What events.lua answers when the stream was trimmed past a watch's cursor.
_TRIMMED = b"!trimmed"
# How long one read of the wake subscription waits; only bounds how soon a stopped reader notices.
WAKE_READ_SECONDS = 1.0

# Finished runs are closed (their unfinished actions aborted) and later dropped
# in steps, one short script each, whatever the run's size: a step aborts up
# to CLOSE_STEP_ABORTS actions after reading at most CLOSE_STEP_READS states,
# or unlinks the keys of DROP_STEP_PARENTS parents. An abort costs about 50 µs of
# Redis on a quiet 2-core machine and up to three times that on a busy one, so a
# step of 100 stays well under the 20 ms every script must keep to.
CLOSE_STEP_ABORTS = 100
CLOSE_STEP_READS = 1_000
DROP_STEP_PARENTS = 200
# A Report RPC or a heartbeat may carry thousands of actions (a dispatcher's whole capacity);
# they are applied a chunk per script, each a few milliseconds: a report costs about 20 µs of
# Redis on a quiet 2-core machine (its state, result and event), a renewed lease under 10.
REPORT_CHUNK = 250
# Results of about this many bytes per report script, too: each is copied into the script's arguments.
REPORT_CHUNK_BYTES = 4 << 20
# Chunks of one report call in Redis' queue at once.
REPORT_CHUNKS_AT_ONCE = 2
HEARTBEAT_CHUNK = 500
# A report that ends a root closes small runs before it is answered; the
# periodic loop goes on with bigger ones.
REPORT_CLOSE_STEPS = 2
# How long one pass of the periodic loop works on one tenant's closing or
# dropping, so that one huge run does not hold up the other tenants.
MAINTENANCE_BUDGET_SECONDS = 1.0

# Results the control plane writes itself, for actions that end without a report.
LEASE_LOST_RESULT = pb.ActionResult(
    error=pb.ActionError(type="LeaseLost", message="the dispatcher running this action stopped renewing its lease")
).SerializeToString()
ABORTED_RESULT = pb.ActionResult(
    error=pb.ActionError(type="Aborted", message="the run was aborted or its root finished first")
).SerializeToString()
ACTION_ABORTED_RESULT = pb.ActionResult(
    error=pb.ActionError(type="Aborted", message="the action or one of its ancestors was aborted")
).SerializeToString()
# The result lease.lua writes for an action that waited in the queue longer than its spec's max_queued_seconds.
QUEUED_TOO_LONG_RESULT = pb.ActionResult(
    error=pb.ActionError(
        type="QueuedTooLong", message="waited in the queue longer than its max_queued_time; it never started"
    )
).SerializeToString()
# max_queued_seconds of this many actions per HSET, so that no command runs long.
QUEUE_LIMITS_PER_COMMAND = 1_000
# A walk of an AbortAction's descendants that no step moved for this long was left by a dead server:
# the periodic loop finishes it (continue_aborts).
ABANDONED_WALK_SECONDS = 5.0
# AbortAction takes at most this many names per call: one short script checks them all, and
# scripts of ABORT_NAMES_PER_SCRIPT abort them (an abort costs up to ~150 µs on a busy machine).
MAX_ABORT_NAMES = 1_000
ABORT_NAMES_PER_SCRIPT = CLOSE_STEP_ABORTS


class LeasedAction(NamedTuple):  # a tuple: thousands are built per second, cheaper than a frozen dataclass
    tenant: str
    run: str
    name: str
    parent: str
    attempt: int
    spec: bytes
    admitted_at: float
    max_payload_bytes: int  # the tenant's cap on its output, read in the same step as the lease


class LeaseChunk(NamedTuple):
    actions: list[LeasedAction]
    drained: bool  # it took the tenant's last waiting work: the tenant may be marked idle


class Report(NamedTuple):  # a tuple, as LeasedAction
    run: str
    name: str
    attempt: int
    phase: int
    result: bytes = b""
    # > 0 with a failure: queue the action again after this many seconds.
    retry_after: float = 0.0


@dataclass(frozen=True)
class LeaseRef:
    run: str
    name: str
    attempt: int


class ChildState(NamedTuple):  # a tuple, as LeasedAction: a watch builds one per change
    name: str
    phase: int
    attempt: int
    result: bytes  # empty until terminal


@dataclass(frozen=True)
class SnapshotPage:
    cursor: str  # the event cursor to follow from; on the first page only, else ""
    children: list[ChildState]
    next_offset: int | None  # None after the last page


@dataclass(frozen=True)
class RunInfo:
    name: str
    root: str
    phase: int
    action_count: int
    created_at: float


def _report_head(r: Report) -> str:
    return f"{r.run} {r.name} {r.attempt} {r.phase} {len(r.result)} {r.retry_after!r}"


def _report_chunks(reports: Sequence[Report]) -> Iterator[Sequence[Report]]:
    """The reports in order, in chunks of at most REPORT_CHUNK reports and about REPORT_CHUNK_BYTES of results."""
    start, size = 0, 0
    for i, r in enumerate(reports):
        if i > start and (i - start == REPORT_CHUNK or size + len(r.result) > REPORT_CHUNK_BYTES):
            yield reports[start:i]
            start, size = i, 0
        size += len(r.result)
    if start < len(reports):
        yield reports[start:]


def _leased(tenant: str, heads: bytes, specs: bytes, payload_cap: int) -> list[LeasedAction]:
    """The actions of one packed lease.lua reply: a line of figures per action, and their specs end to end."""
    out: list[LeasedAction] = []
    at = 0
    for head in heads.split(b"\n") if heads else []:
        run, name, attempt, admitted, size, parent = head.split(b" ", 5)
        end = at + int(size)
        out.append(
            LeasedAction(
                tenant,
                run.decode(),
                name.decode(),
                parent.decode(),
                int(attempt),
                specs[at:end],
                float(admitted),
                payload_cap,
            )
        )
        at = end
    return out


class EventsTrimmed(Exception):
    """A watch fell so far behind that its parent's event stream was trimmed past its cursor.

    Changes may have been lost with the trimmed entries, so the watch must replay
    current state again instead of following from its cursor.
    """


class ActionStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        scripts: Scripts,
        limits: LimitStore,
        *,
        lease_seconds: float = 15.0,
        max_attempts: int = 3,
        events_maxlen: int = keys.EVENTS_MAXLEN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Typed loosely: redis-py types replies as str | bytes; with decode_responses off they are bytes.
        self._redis: Any = redis
        self._scripts = scripts
        self._limits = limits
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.events_maxlen = events_maxlen
        self._clock = clock
        self._admitter = Admitter(self._redis, scripts, limits, clock, self._mark_ready)
        self._local_wakes: list[Callable[[str], None]] = []
        # Names this store's published wakes, so that its own subscription skips them (see wakes()).
        self._origin = secrets.token_hex(8)
        # Reaping waits a lease period after Redis was unreachable (see reap).
        self._lost_contact = False
        self._reap_resumes_at = 0.0

    @property
    def defaults(self) -> Limits:
        return self._limits.defaults

    # Tenants ---------------------------------------------------------------

    @fail_closed
    async def register_tenant(self, tenant: str) -> bool:
        return bool(await self._redis.sadd(keys.TENANTS, tenant))

    @fail_closed
    async def tenants(self) -> list[str]:
        return sorted(t.decode() for t in await self._redis.smembers(keys.TENANTS))

    # Admission -------------------------------------------------------------

    @fail_closed
    async def create_run(
        self, tenant: str, run: str, root_name: str, root_spec: bytes, inputs_bytes: int | None = None
    ) -> float | None:
        """Create a run holding its root action: its creation time, or None when the run already exists.

        With `inputs_bytes` (the root's inputs size), a root over the tenant's max_payload_bytes is
        refused (InvalidArgument) by the same script, and nothing is written.
        """
        root, now = [(root_name, root_spec)], self._clock()
        outcome = await self._admitter.admit(tenant, run, "", root, mode="create", inputs_bytes=inputs_bytes, now=now)
        return now if outcome is not None else None

    @fail_closed
    async def admit(
        self,
        tenant: str,
        run: str,
        parent: str,
        actions: Sequence[tuple[str, bytes]] | Batch,
        *,
        dry_run: bool = False,
    ) -> Admission:
        """Admit children of `parent` into `run`, all or nothing, in short scripts (see admission.py)."""
        outcome = await self._admitter.admit(tenant, run, parent, actions, mode="dry" if dry_run else "submit")
        assert outcome is not None
        return outcome

    @fail_closed
    async def set_queue_limits(self, tenant: str, run: str, limits: dict[str, int]) -> None:
        """Record the max_queued_seconds of admitted actions that have one, for lease.lua to enforce.

        Called once they are admitted, not before: a refused batch must write nothing. A lease in
        between cannot miss an expiry: it comes within milliseconds of the admission, and the
        smallest max_queued_seconds is one second.
        """
        key = keys.TenantKeys(tenant).queue_limits(run)
        items = list(limits.items())
        async with self._redis.pipeline(transaction=False) as pipe:
            for at in range(0, len(items), QUEUE_LIMITS_PER_COMMAND):
                pipe.hset(key, mapping=dict(items[at : at + QUEUE_LIMITS_PER_COMMAND]))
            await pipe.execute()

    @fail_closed
    async def finish_committed_batches(self, tenant: str) -> int:
        """Finish moving committed batches whose mover stalled (a server died); returns how many."""
        return await self._admitter.finish_committed(tenant)

    # Dispatch --------------------------------------------------------------

    async def lease(self, tenant: str, want: int, scoped: bool = False) -> list[LeasedAction]:
        """Lease up to `want` actions; a tenant left with nothing queued is dropped from the ready set.

        `scoped`: the caller is a dispatcher scoped to this tenant, the only kind that leases a BYOC tenant's work.
        """
        chunk = await self.lease_chunk(tenant, want, scoped)
        if chunk.drained:
            await self.mark_idle(tenant)
        return chunk.actions

    @fail_closed
    async def lease_chunk(self, tenant: str, want: int, scoped: bool = False) -> LeaseChunk:
        """lease(), leaving to the caller to mark a drained tenant idle (mark_idle) once it sent the actions.

        A tenant that got nothing is marked idle here: there is nothing to send first.
        """
        k = keys.TenantKeys(tenant)
        out: list[LeasedAction] = []
        for _ in range(LEASE_CALLS):
            heads, specs, pending, bounded, payload_cap = await self._scripts.lease(
                keys=[k.queue, k.slots, k.leased, k.limits, k.delayed, k.runs, k.placement, k.stats, k.closing],
                args=[
                    k.prefix,
                    self.defaults.max_concurrency,
                    want - len(out),
                    self._clock(),
                    self.lease_seconds,
                    LEASE_WORK,
                    int(scoped),
                    QUEUED_TOO_LONG_RESULT,
                    self.events_maxlen,
                    self.defaults.max_payload_bytes,
                ],
            )
            out += _leased(tenant, heads, specs, int(payload_cap))
            if not bounded or len(out) >= want:
                break
        if not out and not pending:
            await self.mark_idle(tenant)
        return LeaseChunk(out, drained=bool(out) and not pending)

    @fail_closed
    async def wake(self, tenant: str) -> None:
        """Mark the tenant ready and wake every server's lease streams for it (e.g. a retry fell due)."""
        await self._mark_ready(tenant)

    def on_wake(self, callback: Callable[[str], None]) -> None:
        """Call `callback(tenant)` at once whenever this store wakes a tenant, besides publishing the wake.

        This process's own lease streams then need not wait for the published wake to come back
        through Redis: on a busy server that was two waits in Redis' queue and two event-loop turns
        on the way from an admission to its lease. This store's subscription (wakes()) skips the
        published copy.
        """
        self._local_wakes.append(callback)

    def _wake_here(self, tenant: str) -> None:
        for callback in self._local_wakes:
            callback(tenant)

    async def wakes(self, subscribed: Callable[[], None]) -> AsyncIterator[str]:
        """The tenants woken on any other server (see keys.WAKE_CHANNEL), as they are, until the caller stops.

        This store's own wakes are left out: they called the on_wake callbacks when they were made,
        and a second wake would cost each stream a lease that finds nothing. Calls `subscribed` once
        the subscription holds: wakes published before it were missed, so the caller sweeps then.
        Raises Unavailable when the subscription is lost.
        """
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            # A cluster client learns its slot map on its first command; a subscription needs it.
            await self._redis.initialize()
            await pubsub.subscribe(keys.WAKE_CHANNEL)
            subscribed()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=WAKE_READ_SECONDS)
                if message is None:
                    raise_if_cancelling()  # the read may have taken our cancel for its own timeout
                else:
                    tenant, _, origin = message["data"].decode().partition(" ")
                    if origin != self._origin:
                        yield tenant
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise_if_cancelling(exc)
            raise Unavailable(f"lost the wake subscription: {exc}") from exc
        finally:
            await pubsub.aclose()

    async def _mark_ready(self, tenant: str) -> None:
        # This server's streams at once: the work is queued already. A stream that leases before the
        # mark lands and finds nothing (another server's stream took it) unmarks the tenant, and the
        # mark landing after that is a stale one the next sweep drops: a wasted lease, no lost work.
        self._wake_here(tenant)
        # One round trip; the mark lands before the published wake, so a stream it wakes that finds
        # nothing to lease leaves the mark to the sweep only when the work is truly gone.
        await self._scripts.mark_ready(keys=[keys.READY], args=[tenant, keys.WAKE_CHANNEL, self._wake_message(tenant)])

    async def _wake_if_ready(self, tenant: str) -> None:
        # A tenant keeps its ready mark while it has work waiting (lease.lua counts it), so a
        # freed slot wakes the streams only when something can use it.
        if await self._redis.sismember(keys.READY, tenant):
            await self._wake(tenant)

    async def _wake(self, tenant: str) -> None:
        self._wake_here(tenant)
        await self._redis.publish(keys.WAKE_CHANNEL, self._wake_message(tenant))

    def _wake_message(self, tenant: str) -> str:
        return f"{tenant} {self._origin}"

    @fail_closed
    async def mark_idle(self, tenant: str) -> None:
        """Drop the tenant from the ready set unless it has work waiting.

        So a tenant stays marked only while it has work: a slot its actions free then wakes no
        stream (_wake_if_ready; report.lua looks at the same lengths itself).
        """
        # Admission queues first and marks ready after, so checking the queue
        # after removing the mark cannot lose a wakeup: either we see its
        # actions here, or its mark lands after our removal.
        # No wake with that mark: whoever queued the work wakes the streams after queueing it.
        # Two round trips, not one script: the ready set and the tenant's keys may be in
        # different slots of a Redis Cluster. The three lengths share the tenant's slot.
        k = keys.TenantKeys(tenant)
        await self._redis.srem(keys.READY, tenant)
        async with self._redis.pipeline(transaction=False) as pipe:
            waiting = await pipe.llen(k.queue).llen(k.runs).zcard(k.delayed).execute()
        if any(waiting):
            await self._redis.sadd(keys.READY, tenant)

    @fail_closed
    async def report(self, tenant: str, reports: Sequence[Report]) -> int:
        """Apply phase reports; returns how many were ignored (stale or duplicate)."""
        k = keys.TenantKeys(tenant)
        script_keys = [k.slots, k.leased, k.stats, k.delayed, k.closing, k.queue, k.runs]
        now = self._clock()
        # Two chunks at a time, each its own short script: one waits in a busy Redis' queue while
        # the other runs, and another tenant's script never waits behind more than two of them.
        # Their order does not matter: phases only move forward.
        gate = asyncio.Semaphore(REPORT_CHUNKS_AT_ONCE)

        async def apply(chunk: Sequence[Report]) -> Any:
            heads = "\n".join(_report_head(r) for r in chunk)
            async with gate:
                args = [k.prefix, now, self.events_maxlen, heads, b"".join(r.result for r in chunk)]
                return await self._scripts.report(keys=script_keys, args=args)

        replies = await asyncio.gather(*(apply(chunk) for chunk in _report_chunks(reports)))
        ignored = sum(int(chunk_ignored) for chunk_ignored, _, _ in replies)
        closed = [run for _, chunk_closed, _ in replies for run in chunk_closed]
        if any(r.retry_after for r in reports):
            await self._mark_ready(tenant)  # the retry waits in the delayed set; its slot is free
        elif int(ignored) < len(reports) and any(phases.is_terminal(r.phase) for r in reports):
            if any(int(waiting) for _, _, waiting in replies):  # report.lua looked: no round trip to ask
                await self._wake(tenant)  # a slot was freed and queued work may run in it now
        for run in closed:
            await self.close_run(tenant, run.decode(), max_steps=REPORT_CLOSE_STEPS)
        return int(ignored)

    @fail_closed
    async def heartbeat(self, tenant: str, leases: Sequence[LeaseRef]) -> tuple[list[LeaseRef], list[LeaseRef]]:
        """Renew leases still running; returns (waiting on children, to be stopped)."""
        if not leases:
            return [], []
        k = keys.TenantKeys(tenant)
        waiting: list[LeaseRef] = []
        cancelled: list[LeaseRef] = []
        for start in range(0, len(leases), HEARTBEAT_CHUNK):
            chunk = leases[start : start + HEARTBEAT_CHUNK]
            args: list[str | int | float] = [k.prefix, self._clock() + self.lease_seconds]
            for lease in chunk:
                args += [lease.run, lease.name, lease.attempt]
            chunk_waiting, chunk_cancelled = await self._scripts.heartbeat(keys=[k.slots, k.leased], args=args)
            waiting += (chunk[int(i)] for i in chunk_waiting)
            cancelled += (chunk[int(i)] for i in chunk_cancelled)
        return waiting, cancelled

    def lost_contact(self) -> None:
        """Redis was unreachable: from when it answers again, leases get one full period before reaping."""
        self._lost_contact = True

    @fail_closed
    async def reap(self, tenant: str) -> tuple[int, int]:
        """Reclaim expired leases: (requeued, failed).

        No lease could be renewed while Redis was unreachable, and the
        dispatchers' lease streams broke with it: an outage of the control
        plane must not count against an action's attempts. So for one lease
        period after Redis answers again (after lost_contact()), nothing is
        reaped, and every live dispatcher has a full period to renew.
        """
        if self._lost_contact:
            self._lost_contact = False
            self._reap_resumes_at = self._clock() + self.lease_seconds
        if self._clock() < self._reap_resumes_at:
            return 0, 0
        k = keys.TenantKeys(tenant)
        requeued, failed = await self._scripts.reap(
            keys=[k.slots, k.leased, k.queue, k.stats, k.closing],
            args=[k.prefix, self._clock(), self.events_maxlen, self.max_attempts, LEASE_LOST_RESULT],
        )
        if requeued:
            await self._mark_ready(tenant)
        return int(requeued), int(failed)

    @fail_closed
    async def abort_run(self, tenant: str, run: str) -> int:
        """Abort the run's unfinished actions; returns how many this call aborted (0 if it had finished)."""
        began = await self.begin_abort(tenant, run)
        await self.close_run(tenant, run)
        if not began:
            return 0
        # Counted in the run, not here: the periodic loop may have walked some of the steps.
        return int(await self._redis.hget(keys.TenantKeys(tenant).run(run), "aborted") or 0)

    @fail_closed
    async def begin_abort(self, tenant: str, run: str) -> bool:
        """Abort the run's root, which ends the run at once; False when it had finished already."""
        k = keys.TenantKeys(tenant)
        began = int(
            await self._scripts.abort(
                keys=[k.run(run), k.slots, k.leased, k.stats, k.closing],
                args=[k.prefix, self._clock(), self.events_maxlen, ABORTED_RESULT, run],
            )
        )
        if began < 0:
            raise NotFound(f"run {run!r} not found")
        return bool(began)

    @fail_closed
    async def abort_actions(self, tenant: str, run: str, names: Sequence[str], child_of: str | None = None) -> int:
        """Abort `names` and all their descendants, to the end; returns how many this call aborted.

        With `child_of`, every name must be a child of that action (PermissionDenied otherwise).
        Raises NotFound, changing nothing, when the run or any name does not exist.
        """
        aborted = await self.begin_abort_actions(tenant, run, names, child_of)
        aborted += (await self.walk_aborts(tenant, run))[0]
        if aborted:
            await self._wake_if_ready(tenant)  # slots were freed: queued work may run now
        return aborted

    @fail_closed
    async def begin_abort_actions(
        self, tenant: str, run: str, names: Sequence[str], child_of: str | None = None
    ) -> int:
        """Abort `names` at once and queue their descendants for walk_aborts (see abort_actions); returns how many.

        Should the caller die before walking, the servers' periodic loop walks on (continue_aborts).
        """
        # One short script checks every name first, so that a bad one changes nothing; then each
        # chunk is aborted by a script of its own. Names cannot vanish in between (only the dropping
        # of a finished run deletes them).
        aborted = 0
        if len(names) > ABORT_NAMES_PER_SCRIPT:
            await self._abort_names(tenant, run, names, child_of, "check")
        for at in range(0, len(names), ABORT_NAMES_PER_SCRIPT):
            aborted += await self._abort_names(tenant, run, names[at : at + ABORT_NAMES_PER_SCRIPT], child_of, "abort")
        return aborted

    async def _abort_names(self, tenant: str, run: str, names: Sequence[str], child_of: str | None, mode: str) -> int:
        k = keys.TenantKeys(tenant)
        reply = await self._scripts.abort_action(
            keys=self._abort_keys(k, run),
            args=[
                k.prefix,
                self._clock(),
                self.events_maxlen,
                ACTION_ABORTED_RESULT,
                run,
                int(child_of is not None),
                child_of or "",
                mode,
                *names,
            ],
        )
        outcome = reply[0].decode()
        if outcome == "NO_RUN":
            raise NotFound(f"run {run!r} not found")
        if outcome == "NOT_FOUND":
            raise NotFound(f"action {reply[1].decode()!r} not found in run {run!r}")
        if outcome == "NOT_CHILD":
            raise PermissionDenied(f"action {child_of!r} may abort only its own children, not {reply[1].decode()!r}")
        aborted, roots = int(reply[1]), int(reply[2])
        if roots:
            await self.close_run(tenant, run)
        return aborted

    def _abort_keys(self, k: keys.TenantKeys, run: str) -> list[str]:
        return [
            k.run(run),
            k.states(run),
            k.slots,
            k.leased,
            k.stats,
            k.closing,
            k.aborting,
            k.abort_walk(run),
            k.parents(run),
        ]

    @fail_closed
    async def walk_aborts(self, tenant: str, run: str, max_steps: int | None = None) -> tuple[int, bool]:
        """Abort the descendants of the run's aborted actions, a short script per step: (how many, True once done)."""
        k = keys.TenantKeys(tenant)
        aborted, step, done = 0, 0, False
        while not done and (max_steps is None or step < max_steps):
            count, finished = await self._scripts.abort_step(
                keys=self._abort_keys(k, run),
                args=[
                    k.prefix,
                    self._clock(),
                    self.events_maxlen,
                    ACTION_ABORTED_RESULT,
                    run,
                    CLOSE_STEP_ABORTS,
                    CLOSE_STEP_READS,
                ],
            )
            aborted, step, done = aborted + int(count), step + 1, bool(finished)
        return aborted, done

    @fail_closed
    async def continue_aborts(self, tenant: str, budget: float = MAINTENANCE_BUDGET_SECONDS) -> int:
        """Go on aborting descendants where an AbortAction stopped (its server died); returns how many walks ended.

        Only walks no step has moved for ABANDONED_WALK_SECONDS: a live AbortAction walks its own to the end.
        """
        deadline = time.monotonic() + budget
        ended = 0
        abandoned = self._clock() - ABANDONED_WALK_SECONDS
        for raw in await self._redis.zrangebyscore(
            keys.TenantKeys(tenant).aborting, "-inf", abandoned, start=0, num=100
        ):
            run = raw.decode()
            while not (await self.walk_aborts(tenant, run, max_steps=1))[1]:
                if time.monotonic() > deadline:
                    return ended
            ended += 1
            if time.monotonic() > deadline:
                break
        return ended

    @fail_closed
    async def close_run(self, tenant: str, run: str, max_steps: int | None = None) -> bool:
        """Abort a finished run's unfinished actions, one short script per step; True once all are done."""
        k = keys.TenantKeys(tenant)
        step = 0
        while max_steps is None or step < max_steps:
            _, closed = await self._scripts.close_run(
                keys=[k.run(run), k.states(run), k.slots, k.leased, k.stats, k.closing, k.finished],
                args=[
                    k.prefix,
                    self._clock(),
                    self.events_maxlen,
                    ABORTED_RESULT,
                    run,
                    CLOSE_STEP_ABORTS,
                    CLOSE_STEP_READS,
                ],
            )
            if closed:
                return True
            step += 1
        return False

    @fail_closed
    async def close_finished_runs(self, tenant: str, budget: float = MAINTENANCE_BUDGET_SECONDS) -> int:
        """Go on closing runs that finished (a server may have died walking one); returns how many closed."""
        deadline = time.monotonic() + budget
        closed = 0
        for run in await self._redis.zrange(keys.TenantKeys(tenant).closing, 0, 99):
            while not await self.close_run(tenant, run.decode(), max_steps=1):
                if time.monotonic() > deadline:
                    return closed
            closed += 1
            if time.monotonic() > deadline:
                break
        return closed

    @fail_closed
    async def drop_expired_runs(self, tenant: str, budget: float = MAINTENANCE_BUDGET_SECONDS) -> int:
        """Drop closed runs older than the tenant's retention, in short steps; returns how many were dropped."""
        k = keys.TenantKeys(tenant)
        before = self._clock() - (await self._limits.effective(tenant)).retention_seconds
        deadline = time.monotonic() + budget
        dropped = 0
        for raw in await self._redis.zrangebyscore(k.finished, "-inf", f"({before}", start=0, num=100):
            run = raw.decode()
            args = [k.prefix, run, before, DROP_STEP_PARENTS, *keys.PARENT_KEY_SUFFIXES, "|", *keys.RUN_KEY_SUFFIXES]
            while (
                gone := int(
                    await self._scripts.drop_run(
                        keys=[k.finished, k.stats, k.run(run), k.parents(run), k.run_index], args=args
                    )
                )
            ) == 0:
                if time.monotonic() > deadline:
                    return dropped
            dropped += gone == 1
            if time.monotonic() > deadline:
                break
        return dropped

    # Reads -----------------------------------------------------------------

    @fail_closed
    async def get_run(self, tenant: str, run: str) -> RunInfo:
        raw = await self._redis.hgetall(keys.TenantKeys(tenant).run(run))
        if not raw:
            raise NotFound(f"run {run!r} not found")
        return RunInfo(run, raw[b"root"].decode(), int(raw[b"phase"]), int(raw[b"count"]), float(raw[b"created"]))

    @fail_closed
    async def keep_outputs(self, tenant: str, outputs: Sequence[tuple[str, str, int, bytes]]) -> None:
        """Keep what attempts printed, (run, action, attempt, output) each, counted in the tenant's stored
        bytes (keep_output.lua): one round trip for them all."""
        k = keys.TenantKeys(tenant)
        async with self._redis.pipeline(transaction=False) as pipe:
            for run, name, attempt, printed in outputs:
                await self._scripts.keep_output(
                    keys=[k.outputs(run), k.run(run), k.stats], args=[f"{name}/{attempt}", printed], client=pipe
                )
            await pipe.execute()

    @fail_closed
    async def get_action(self, tenant: str, run: str, name: str) -> tuple[bytes, str, int, int, bytes]:
        """(spec, parent, phase, attempt, result) of one action."""
        k = keys.TenantKeys(tenant)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.specs(run), name)
            pipe.hget(k.states(run), name)
            pipe.hget(k.results(run), name)
            spec, state, result = await pipe.execute()
        if state is None:
            raise NotFound(f"action {name!r} not found in run {run!r}")
        phase, attempt, parent = state.decode().split(":", 2)
        return spec, parent, int(phase), int(attempt), result or b""

    @fail_closed
    async def groups(self, tenant: str, run: str, names: Sequence[str]) -> dict[str, str]:
        """The group (flyte.group) each named action was created in, "" for none, from their specs."""
        specs = await self._redis.hmget(keys.TenantKeys(tenant).specs(run), list(names))
        return {
            name: pb.ActionSpec.FromString(spec).group if spec else "" for name, spec in zip(names, specs, strict=True)
        }

    @fail_closed
    async def snapshot(self, tenant: str, run: str, parent: str, offset: int = 0) -> SnapshotPage:
        """One page of the children of `parent` as they are now, from `offset` in submission order.

        The first page (offset 0) carries the event cursor to follow from; a replay reads pages
        until `next_offset` is None, each one short script however many children there are.
        """
        k = keys.TenantKeys(tenant)
        reply = await self._scripts.snapshot(
            keys=[k.kids(run, parent), k.states(run), k.results(run), k.events(run, parent)],
            args=[offset, SNAPSHOT_PAGE, SNAPSHOT_PAGE_BYTES, int(offset == 0)],
        )
        children = [
            ChildState(reply[i].decode(), int(reply[i + 1]), int(reply[i + 2]), reply[i + 3])
            for i in range(2, len(reply), 4)
        ]
        following = int(reply[1])
        return SnapshotPage(reply[0].decode(), children, None if following < 0 else following)

    @fail_closed
    async def exists(self, tenant: str, run: str) -> bool:
        return bool(await self._redis.exists(keys.TenantKeys(tenant).run(run)))

    @fail_closed
    async def events(
        self, tenant: str, run: str, parent: str, cursor: str, block_ms: int, count: int = EVENTS_PAGE
    ) -> list[tuple[str, ChildState]]:
        """Child changes after `cursor`, waiting up to `block_ms` for the first one (0: no wait).

        Read by a script that packs them (events.lua): a stream entry parsed field by field costs
        the server more than anything else a big fanout asks of it. Only an idle watch blocks,
        on a read of one entry, and then reads what came. Raises EventsTrimmed when changes
        after `cursor` may have been trimmed away (the stream is capped at events_maxlen).
        """
        stream = keys.TenantKeys(tenant).events(run, parent)
        args = [cursor, count, EVENTS_PAGE_BYTES, self.events_maxlen]
        # A watch's client may close it at any moment: what runs then must not cost its connection.
        reply = await blocking_reads.completing(self._scripts.events(keys=[stream], args=args))
        if block_ms > 0 and not reply[0] and await blocking_reads.xread(self._redis, {stream: cursor}, 1, block_ms):
            reply = await blocking_reads.completing(self._scripts.events(keys=[stream], args=args))
        if reply[0] == _TRIMMED:
            raise EventsTrimmed(f"events of {run}/{parent} after {cursor} were trimmed")
        out: list[tuple[str, ChildState]] = []
        results, at = reply[1] if len(reply) > 1 else b"", 0
        for head in reply[0].split(b"\n") if reply[0] else []:
            entry_id, phase, attempt, size, name = head.split(b" ", 4)
            end = at + int(size)
            out.append((entry_id.decode(), ChildState(name.decode(), int(phase), int(attempt), results[at:end])))
            at = end
        return out

    @fail_closed
    async def ready(self, tenant: str, cursors: dict[tuple[str, str], str], block_ms: int) -> set[tuple[str, str]]:
        """Which (run, parent) event streams have changes after their cursors, waiting up to `block_ms`.

        One blocking XREAD of one entry per stream, for a watch of many parents (all of one
        tenant, so one hash slot); events() then reads the changes of those that have some.
        """
        k = keys.TenantKeys(tenant)
        streams = {k.events(run, parent): (run, parent) for run, parent in cursors}
        reply = await blocking_reads.xread(
            self._redis, {k.events(run, parent): cursor for (run, parent), cursor in cursors.items()}, 1, block_ms
        )
        found = reply.items() if isinstance(reply, dict) else reply or []
        return {streams[stream.decode() if isinstance(stream, bytes) else stream] for stream, _ in found}

    @fail_closed
    async def queued(self, tenant: str) -> int:
        return int(await self._redis.hget(keys.TenantKeys(tenant).stats, "queued") or 0)

    @fail_closed
    async def stored_bytes(self, tenant: str) -> int:
        """Bytes of specs and results the tenant keeps in Redis, over its runs not yet dropped."""
        return int(await self._redis.hget(keys.TenantKeys(tenant).stats, "bytes") or 0)

    @fail_closed
    async def running(self, tenant: str) -> int:
        return int(await self._redis.scard(keys.TenantKeys(tenant).slots))
