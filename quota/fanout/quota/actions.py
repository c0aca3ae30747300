"""Actions in Redis: admission, leasing, phase reports, reclaim, and watch reads.

Each public method that decides something is one Lua script on one tenant's
keys. Specs and results are opaque serialized protos here; this layer checks
names and counts, never payload contents.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys
from fanout.quota.errors import FailedPrecondition, NotFound, QuotaExceeded
from fanout.quota.failclosed import fail_closed
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.scripts import Scripts
from fanout.v1 import actions_pb2 as pb

QUEUE_FULL_RETRY_SECONDS = 1.0

# Results the control plane writes itself, for actions that end without a report.
LEASE_LOST_RESULT = pb.ActionResult(
    error=pb.ActionError(type="LeaseLost", message="the dispatcher running this action stopped renewing its lease")
).SerializeToString()
ABORTED_RESULT = pb.ActionResult(
    error=pb.ActionError(type="Aborted", message="the run was aborted or its root finished first")
).SerializeToString()


@dataclass(frozen=True)
class Admission:
    admitted: int
    already_present: int
    fanout_used: int
    fanout_limit: int


@dataclass(frozen=True)
class LeasedAction:
    tenant: str
    run: str
    name: str
    parent: str
    attempt: int
    spec: bytes
    admitted_at: float


@dataclass(frozen=True)
class Report:
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


@dataclass(frozen=True)
class ChildState:
    name: str
    phase: int
    attempt: int
    result: bytes  # empty until terminal


@dataclass(frozen=True)
class RunInfo:
    name: str
    root: str
    phase: int
    action_count: int
    created_at: float


def pack_batch(actions: Sequence[tuple[str, bytes]]) -> bytes:
    """Actions as one blob for admit.lua: per action a u16 name length, a u32 spec length, name, spec."""
    parts = []
    for name, spec in actions:
        encoded = name.encode()
        parts += [_HEADER.pack(len(encoded), len(spec)), encoded, spec]
    return b"".join(parts)


_HEADER = struct.Struct(">HI")


class ActionStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        scripts: Scripts,
        limits: LimitStore,
        *,
        lease_seconds: float = 15.0,
        max_attempts: int = 3,
        retention_seconds: int = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Typed loosely: redis-py types replies as str | bytes; with decode_responses off they are bytes.
        self._redis: Any = redis
        self._scripts = scripts
        self._limits = limits
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.retention_seconds = retention_seconds
        self._clock = clock

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
    async def create_run(self, tenant: str, run: str, root_name: str, root_spec: bytes) -> bool:
        """Create a run holding its root action. False when the run already exists."""
        outcome = await self._admit(tenant, run, "", [(root_name, root_spec)], mode="create")
        return outcome is not None

    @fail_closed
    async def admit(
        self, tenant: str, run: str, parent: str, actions: Sequence[tuple[str, bytes]], *, dry_run: bool = False
    ) -> Admission:
        """Admit children of `parent` into `run`, all or nothing."""
        outcome = await self._admit(tenant, run, parent, actions, mode="dry" if dry_run else "submit")
        assert outcome is not None
        return outcome

    async def _admit(
        self, tenant: str, run: str, parent: str, actions: Sequence[tuple[str, bytes]], mode: str
    ) -> Admission | None:
        k = keys.TenantKeys(tenant)
        args: list[str | bytes | int | float] = [
            run,
            parent,
            self._clock(),
            self.defaults.max_fanout,
            self.defaults.max_queued,
            mode,
            pack_batch(actions),
        ]
        reply = await self._scripts.admit(
            keys=[
                k.run(run),
                k.specs(run),
                k.states(run),
                k.kids(run, parent),
                k.queue,
                k.limits,
                k.stats,
                k.slots,
                k.parents(run),
            ],
            args=args,
        )
        status = reply[0].decode()
        if status == "OK":
            admission = Admission(*(int(x) for x in reply[1:5]))
            if admission.admitted and mode != "dry":
                await self._mark_ready(tenant)
            return admission
        if status == "EXISTS":
            return None
        if status == "FANOUT":
            raise QuotaExceeded("max_fanout", *(int(x) for x in reply[1:4]))
        if status == "QUEUED":
            raise QuotaExceeded("max_queued", *(int(x) for x in reply[1:4]), retry_after=QUEUE_FULL_RETRY_SECONDS)
        if status == "NO_RUN":
            raise NotFound(f"run {run!r} not found")
        if status == "NO_PARENT":
            raise NotFound(f"parent action {parent!r} not found in run {run!r}")
        if status == "PARENT_DONE":
            raise FailedPrecondition(f"parent action {parent!r} has already finished")
        raise RuntimeError(f"unexpected admission reply {reply!r}")

    # Dispatch --------------------------------------------------------------

    @fail_closed
    async def lease(self, tenant: str, want: int) -> list[LeasedAction]:
        """Lease up to `want` actions; a tenant left with nothing queued is dropped from the ready set."""
        k = keys.TenantKeys(tenant)
        rows, pending = await self._scripts.lease(
            keys=[k.queue, k.slots, k.leased, k.limits, k.delayed],
            args=[k.prefix, self.defaults.max_concurrency, want, self._clock(), self.lease_seconds],
        )
        if not rows and not pending:
            await self._mark_idle(tenant)
        return [
            LeasedAction(tenant, run.decode(), name.decode(), parent.decode(), int(attempt), spec, float(admitted))
            for run, name, parent, attempt, spec, admitted in rows
        ]

    @fail_closed
    async def ready_tenants(self) -> list[str]:
        """Tenants that may have leasable work (see keys.READY)."""
        return sorted(t.decode() for t in await self._redis.smembers(keys.READY))

    async def _mark_ready(self, tenant: str) -> None:
        await self._redis.sadd(keys.READY, tenant)

    async def _mark_idle(self, tenant: str) -> None:
        # Admission queues first and marks ready after, so checking the queue
        # after removing the mark cannot lose a wakeup: either we see its
        # actions here, or its mark lands after our removal.
        k = keys.TenantKeys(tenant)
        await self._redis.srem(keys.READY, tenant)
        if await self._redis.llen(k.queue) or await self._redis.zcard(k.delayed):
            await self._mark_ready(tenant)

    @fail_closed
    async def report(self, tenant: str, reports: Sequence[Report]) -> int:
        """Apply phase reports; returns how many were ignored (stale or duplicate)."""
        k = keys.TenantKeys(tenant)
        args: list[str | bytes | int | float] = [
            k.prefix,
            self._clock(),
            keys.EVENTS_MAXLEN,
            ABORTED_RESULT,
            self.retention_seconds,
        ]
        for r in reports:
            args += [r.run, r.name, r.attempt, r.phase, r.result, r.retry_after]
        ignored = int(await self._scripts.report(keys=[k.slots, k.leased, k.stats, k.delayed], args=args))
        if any(r.retry_after for r in reports):
            await self._mark_ready(tenant)  # the retry waits in the delayed set
        return ignored

    @fail_closed
    async def heartbeat(self, tenant: str, leases: Sequence[LeaseRef]) -> tuple[list[LeaseRef], list[LeaseRef]]:
        """Renew leases still running; returns (waiting on children, to be stopped)."""
        if not leases:
            return [], []
        k = keys.TenantKeys(tenant)
        args: list[str | int | float] = [k.prefix, self._clock() + self.lease_seconds]
        for lease in leases:
            args += [lease.run, lease.name, lease.attempt]
        waiting, cancelled = await self._scripts.heartbeat(keys=[k.slots, k.leased], args=args)
        return [leases[int(i)] for i in waiting], [leases[int(i)] for i in cancelled]

    @fail_closed
    async def reap(self, tenant: str) -> tuple[int, int]:
        """Reclaim expired leases: (requeued, failed)."""
        k = keys.TenantKeys(tenant)
        requeued, failed = await self._scripts.reap(
            keys=[k.slots, k.leased, k.queue, k.stats],
            args=[
                k.prefix,
                self._clock(),
                keys.EVENTS_MAXLEN,
                self.max_attempts,
                LEASE_LOST_RESULT,
                ABORTED_RESULT,
                self.retention_seconds,
            ],
        )
        if requeued:
            await self._mark_ready(tenant)
        return int(requeued), int(failed)

    @fail_closed
    async def abort_run(self, tenant: str, run: str) -> int:
        """Abort the run's unfinished actions; returns how many were aborted."""
        k = keys.TenantKeys(tenant)
        aborted = int(
            await self._scripts.abort(
                keys=[k.run(run), k.slots, k.leased, k.stats],
                args=[k.prefix, self._clock(), keys.EVENTS_MAXLEN, ABORTED_RESULT, run, self.retention_seconds],
            )
        )
        if aborted < 0:
            raise NotFound(f"run {run!r} not found")
        return aborted

    # Reads -----------------------------------------------------------------

    @fail_closed
    async def get_run(self, tenant: str, run: str) -> RunInfo:
        raw = await self._redis.hgetall(keys.TenantKeys(tenant).run(run))
        if not raw:
            raise NotFound(f"run {run!r} not found")
        return RunInfo(run, raw[b"root"].decode(), int(raw[b"phase"]), int(raw[b"count"]), float(raw[b"created"]))

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
    async def snapshot(self, tenant: str, run: str, parent: str) -> tuple[str, list[ChildState]]:
        """Children of `parent` as they are now, and the event cursor to follow from."""
        k = keys.TenantKeys(tenant)
        reply = await self._scripts.snapshot(
            keys=[k.kids(run, parent), k.states(run), k.results(run), k.events(run, parent)]
        )
        cursor = reply[0].decode()
        children = [
            ChildState(reply[i].decode(), int(reply[i + 1]), int(reply[i + 2]), reply[i + 3])
            for i in range(1, len(reply), 4)
        ]
        return cursor, children

    @fail_closed
    async def exists(self, tenant: str, run: str) -> bool:
        return bool(await self._redis.exists(keys.TenantKeys(tenant).run(run)))

    @fail_closed
    async def events(
        self, tenant: str, run: str, parent: str, cursor: str, block_ms: int, count: int = 1000
    ) -> list[tuple[str, ChildState]]:
        """Child changes after `cursor`, waiting up to `block_ms` for the first one."""
        stream = keys.TenantKeys(tenant).events(run, parent)
        reply = await self._redis.xread({stream: cursor}, count=count, block=block_ms)
        out: list[tuple[str, ChildState]] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                out.append(
                    (
                        entry_id.decode(),
                        ChildState(fields[b"n"].decode(), int(fields[b"p"]), int(fields[b"a"]), fields.get(b"r", b"")),
                    )
                )
        return out

    @fail_closed
    async def queued(self, tenant: str) -> int:
        return int(await self._redis.hget(keys.TenantKeys(tenant).stats, "queued") or 0)

    @fail_closed
    async def running(self, tenant: str) -> int:
        return int(await self._redis.scard(keys.TenantKeys(tenant).slots))
