"""Admission of a batch into a run: all of it or none of it, and no Redis script longer than a few ms.

Redis runs one command at a time, so one long script stalls every tenant. A batch that fits in
one chunk (ADMIT_CHUNK_ACTIONS actions, ADMIT_CHUNK_BYTES bytes) is admitted by one script
(admit.lua). A bigger one goes in three steps, each a short script:

1. stage.lua, once per chunk: the chunk's fresh actions are counted and kept as one value (their
   bytes as they came, see Batch) in staging keys of this batch, which no dispatcher or watcher
   reads and which expire if the submitter dies;
2. commit.lua, once: the limits are checked against the batch's totals and the quota is charged,
   all or nothing; rejected, the staging is dropped and nothing is charged;
3. move.lua, once per chunk: the staged actions become visible (state, spec, the parent's
   children, the run's queue). A name admitted meanwhile by another batch is skipped and its
   charge given back.

Nothing is visible before the commit, and a committed batch is finished whatever happens to the
server moving it: it is listed in the tenant's committed set, and any server finishes it before
admitting into the same run again, and in its periodic loop once its mover has stalled.
"""

from __future__ import annotations

import bisect
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fanout.quota import keys
from fanout.quota.errors import FailedPrecondition, InvalidArgument, NotFound, QuotaExceeded, Unavailable
from fanout.quota.limits import LimitStore
from fanout.quota.scripts import Scripts

QUEUE_FULL_RETRY_SECONDS = 1.0

# One chunk of admission work, about a few milliseconds of Redis time on a small machine
# (bench/slowlog.py prints the longest script). Bytes bound it too: specs may be big.
ADMIT_CHUNK_ACTIONS = 1_000
ADMIT_CHUNK_BYTES = 1 << 20
# A committed batch whose mover has not moved a chunk for this long is taken over by the
# periodic loop (a mover that is alive moves a chunk every few milliseconds).
STALLED_MOVE_SECONDS = 5.0
# Staging expires after keys.STAGE_TTL_SECONDS; a submitter that slow stages again, once.
STAGE_TRIES = 2


@dataclass(frozen=True)
class Admission:
    admitted: int
    already_present: int
    fanout_used: int
    fanout_limit: int


# Batches travel to the scripts as the protobuf wire form of SubmitBatchRequest.actions: the
# request's own bytes, sliced, not re-serialized action by action (see Batch).
_SPEC_TAG = 0x1A  # SubmitBatchRequest.actions (field 3, length-delimited)
_NAME_TAG = 0x0A  # ActionSpec.name (field 1), or an explicit name before an opaque spec


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass(frozen=True)
class Batch:
    """Distinct actions in the scripts' format, with where each one's record ends.

    A record is a 0x1A tag, a varint length and the serialized spec, whose first field is its name
    (how SubmitBatchRequest.actions is serialized), or, for specs the caller gives as opaque bytes,
    a 0x0A tag, a varint length and the name first. `repeats` counts names given again in the
    batch: they are dropped here (the first one counts) and answered as already present, so the
    scripts only ever see distinct names.
    """

    wire: bytes
    ends: list[int]
    repeats: int = 0

    def __len__(self) -> int:
        return len(self.ends)

    @classmethod
    def from_pairs(cls, actions: Sequence[tuple[str, bytes]]) -> Batch:
        parts: list[bytes] = []
        ends: list[int] = []
        seen: set[str] = set()
        size = 0
        for name, spec in actions:
            if name in seen:
                continue
            seen.add(name)
            encoded = name.encode()
            record = b"".join(
                (bytes((_NAME_TAG,)), _varint(len(encoded)), encoded, bytes((_SPEC_TAG,)), _varint(len(spec)), spec)
            )
            parts.append(record)
            size += len(record)
            ends.append(size)
        return cls(b"".join(parts), ends, len(actions) - len(ends))

    @classmethod
    def from_wire(cls, wire: bytes, start: int, names: Sequence[str]) -> Batch | None:
        """The batch of `names`' specs serialized in `wire` from `start` (a SubmitBatchRequest's bytes).

        None when the bytes are not laid out as expected (each spec a 0x1A record starting with its
        name) or a name repeats: the caller then builds the batch from the parsed specs instead.
        """
        if len(set(names)) != len(names):
            return None
        ends: list[int] = []
        pos = start
        try:
            for _ in names:
                if wire[pos] != _SPEC_TAG:
                    return None
                length = wire[pos + 1]
                pos += 2
                if length >= 0x80:
                    length, pos = _read_varint(wire, pos - 1)
                if wire[pos] != _NAME_TAG:
                    return None
                pos += length
                ends.append(pos)
        except IndexError:
            return None
        if pos > len(wire):
            return None
        return cls(wire[start:pos], [end - start for end in ends])

    def sizes(self) -> list[int]:
        """Bytes of each action's record (its spec and a few bytes of framing)."""
        return [end - begin for begin, end in zip([0, *self.ends[:-1]], self.ends, strict=True)]

    def chunks(self) -> list[bytes]:
        """Consecutive chunks of at most ADMIT_CHUNK_ACTIONS actions and about ADMIT_CHUNK_BYTES bytes."""
        out: list[bytes] = []
        begin, i = 0, 0  # byte offset and index of the chunk's first action
        while i < len(self.ends):
            j = min(i + ADMIT_CHUNK_ACTIONS, bisect.bisect_right(self.ends, begin + ADMIT_CHUNK_BYTES, lo=i))
            j = max(j, i + 1)  # one action always fits, however big
            out.append(self.wire[begin : self.ends[j - 1]])
            begin, i = self.ends[j - 1], j
        return out


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def chunked(actions: Sequence[tuple[str, bytes]] | Batch) -> list[bytes]:
    """The batch's chunks, each short work for one script."""
    batch = actions if isinstance(actions, Batch) else Batch.from_pairs(actions)
    return batch.chunks()


class Admitter:
    def __init__(
        self,
        redis: Any,
        scripts: Scripts,
        limits: LimitStore,
        clock: Callable[[], float],
        mark_ready: Callable[[str], Awaitable[None]],
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._limits = limits
        self._clock = clock
        self._mark_ready = mark_ready

    async def admit(
        self,
        tenant: str,
        run: str,
        parent: str,
        actions: Sequence[tuple[str, bytes]] | Batch,
        mode: str,
        inputs_bytes: int | None = None,
        now: float | None = None,
    ) -> Admission | None:
        """mode: create (None when the run exists), submit, or dry (decide, charge nothing).

        `inputs_bytes`: a create's root inputs size, refused here (InvalidArgument) when over the
        tenant's max_payload_bytes; None when the caller checked it. `now`: the time the admission
        records (a run's creation time), else the clock's.
        """
        batch = actions if isinstance(actions, Batch) else Batch.from_pairs(actions)
        parts = batch.chunks()
        if mode == "create" or len(parts) == 1:
            at = self._clock() if now is None else now
            admission = await self._admit_at_once(tenant, run, parent, batch.wire, mode, inputs_bytes, at)
        else:
            admission = await self._admit_staged(tenant, run, parent, parts, dry=mode == "dry")
        if admission is not None and admission.admitted and mode != "dry":
            await self._mark_ready(tenant)
        if admission is not None and batch.repeats:
            admission = replace(admission, already_present=admission.already_present + batch.repeats)
        return admission

    async def finish_committed(self, tenant: str, run: str | None = None) -> int:
        """Finish moving committed batches: those of `run`, or else those whose mover stalled."""
        k = keys.TenantKeys(tenant)
        if run is None:
            stalled = self._clock() - STALLED_MOVE_SECONDS
            members = await self._redis.zrangebyscore(k.committed, "-inf", stalled, start=0, num=100)
        else:
            members = [m for m in await self._redis.zrange(k.committed, 0, 999) if m.startswith(f"{run}/".encode())]
        for member in members:
            owner, batch = member.decode().split("/", 1)
            await self._move(tenant, owner, batch)
        return len(members)

    async def _admit_at_once(
        self, tenant: str, run: str, parent: str, wire: bytes, mode: str, inputs_bytes: int | None, now: float
    ) -> Admission | None:
        k = keys.TenantKeys(tenant)
        d = self._limits.defaults
        check_moving = 1
        while True:
            reply = await self._scripts.admit(
                keys=[
                    k.run(run),
                    k.specs(run),
                    k.states(run),
                    k.kids(run, parent),
                    k.run_queue(run),
                    k.limits,
                    k.stats,
                    k.slots,
                    k.parents(run),
                    k.runs,
                    k.run_index,
                ],
                args=[
                    run,
                    parent,
                    now,
                    d.max_fanout,
                    d.max_queued,
                    d.max_stored_bytes,
                    mode,
                    check_moving,
                    wire,
                    "" if inputs_bytes is None else inputs_bytes,
                    d.max_payload_bytes,
                ],
            )
            status = reply[0].decode()
            if status == "MOVING":  # a committed batch first, so a resubmission finds its names
                await self.finish_committed(tenant, run)
                check_moving = 0
                continue
            if status == "EXISTS":
                return None
            if status == "OK":
                return Admission(*(int(x) for x in reply[1:5]))
            raise _refusal(status, reply, run, parent)

    async def _admit_staged(self, tenant: str, run: str, parent: str, parts: list[bytes], *, dry: bool) -> Admission:
        if int(await self._redis.hget(keys.TenantKeys(tenant).run(run), "moving") or 0):
            await self.finish_committed(tenant, run)
        batch, (fresh, present, used, limit, committed) = await self.stage_and_commit(
            tenant, run, parent, parts, dry=dry
        )
        if not committed:
            return Admission(fresh, present, used, limit)
        moved = await self._move(tenant, run, batch)
        if moved is None:  # finished by another server and long forgotten: the commit's figures
            return Admission(fresh, present, used, limit)
        fresh, skipped, dropped, present = moved
        return Admission(fresh - skipped - dropped, present + skipped, used - skipped - dropped, limit)

    async def stage_and_commit(
        self, tenant: str, run: str, parent: str, parts: list[bytes], *, dry: bool = False
    ) -> tuple[str, tuple[int, int, int, int, int]]:
        """Stage every chunk, then commit: (batch id, (fresh, present, used, limit, 1 if left to move)).

        Raises the refusal (quota, run or parent) with nothing charged. After it returns with a
        batch left to move, the batch is charged and will be moved whatever happens.
        """
        k = keys.TenantKeys(tenant)
        d = self._limits.defaults
        for _ in range(STAGE_TRIES):
            batch = secrets.token_hex(8)
            staging = [k.stage_specs(run, batch), k.stage_meta(run, batch)]
            if not await self._stage(k, run, parent, batch, parts):
                continue
            reply = await self._scripts.commit(
                keys=[k.run(run), k.states(run), k.limits, k.stats, k.slots, k.parents(run), *staging, k.committed],
                args=[
                    run,
                    parent,
                    self._clock(),
                    d.max_fanout,
                    d.max_queued,
                    d.max_stored_bytes,
                    len(parts),
                    f"{run}/{batch}",
                    int(dry),
                ],
            )
            status = reply[0].decode()
            if status == "LOST":
                continue
            if status != "OK":
                raise _refusal(status, reply, run, parent)
            fresh, present, used, limit, committed = (int(x) for x in reply[1:6])
            return batch, (fresh, present, used, limit, committed)
        raise Unavailable(f"the staging of a batch into run {run!r} expired twice; submit it again")

    async def _stage(self, k: keys.TenantKeys, run: str, parent: str, batch: str, parts: list[bytes]) -> bool:
        """Stage every chunk; False when the staging was lost (expired) on the way."""
        staging = [k.stage_specs(run, batch), k.stage_meta(run, batch)]
        for i, part in enumerate(parts):
            reply = await self._scripts.stage(
                keys=[k.run(run), k.states(run), *staging],
                args=[parent, keys.STAGE_TTL_SECONDS, i, part],
            )
            status = reply[0].decode()
            if status == "LOST":
                return False
            if status != "OK":
                raise _refusal(status, reply, run, parent)
        return True

    async def _move(self, tenant: str, run: str, batch: str) -> tuple[int, int, int, int] | None:
        """Move a committed batch to the end: (fresh, skipped, dropped, present), None when it is gone."""
        k = keys.TenantKeys(tenant)
        marked = False
        while True:
            reply = await self._scripts.move(
                keys=[
                    k.run(run),
                    k.specs(run),
                    k.states(run),
                    k.run_queue(run),
                    k.stats,
                    k.stage_specs(run, batch),
                    k.stage_meta(run, batch),
                    k.committed,
                    k.runs,
                ],
                args=[
                    k.prefix,
                    run,
                    self._clock(),
                    f"{run}/{batch}",
                    keys.MOVED_META_TTL_SECONDS,
                ],
            )
            status = reply[0].decode()
            if status == "GONE":
                return None
            if not marked:  # dispatchers may lease the first chunks while the rest moves
                await self._mark_ready(tenant)
                marked = True
            if status == "DONE":
                fresh, skipped, dropped, present = (int(x) for x in reply[1:5])
                return fresh, skipped, dropped, present


def _refusal(status: str, reply: list[Any], run: str, parent: str) -> Exception:
    if status == "PAYLOAD":  # the words of the server's own check (validation.spec_violations)
        name, size, cap = reply[3].decode(), int(reply[1]), int(reply[2])
        return InvalidArgument(f"action {name[:80]!r}: inputs are {size} bytes, max_payload_bytes is {cap}")
    figures = [int(x) for x in reply[1:4]]
    if status == "FANOUT":
        return QuotaExceeded("max_fanout", *figures)
    if status == "QUEUED":
        return QuotaExceeded("max_queued", *figures, retry_after=QUEUE_FULL_RETRY_SECONDS)
    if status == "BYTES":
        return QuotaExceeded("max_stored_bytes", *figures)
    if status == "NO_RUN":
        return NotFound(f"run {run!r} not found")
    if status == "RUN_DONE":
        return FailedPrecondition(f"run {run!r} has finished or is being aborted; it takes no new actions")
    if status == "NO_PARENT":
        return NotFound(f"parent action {parent!r} not found in run {run!r}")
    if status == "PARENT_DONE":
        return FailedPrecondition(f"parent action {parent!r} has already finished")
    return RuntimeError(f"unexpected admission reply {reply!r}")
