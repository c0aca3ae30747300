"""Pages of a tenant's runs and of a run's actions, for ListRuns, ListActions and the run page.

Every call does bounded Redis work whatever the size of the tenant or the run: it reads at most
SCAN_BUDGET index entries or action states, and hands back an opaque cursor to go on from.
A page may then hold fewer than `limit` items although more follow; only an empty cursor
means the end. Specs stay opaque here: the caller parses them (task name, group).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys, phases
from fanout.quota.errors import InvalidArgument, NotFound
from fanout.quota.failclosed import fail_closed

# Index entries or action states one call reads at most, matching or not.
SCAN_BUDGET = 2_000
MAX_LIMIT = 1_000
_FAILED = frozenset({phases.FAILED, phases.TIMED_OUT})
_RUN_FIELDS = ("root", "phase", "count", "created", *(f"p{p}" for p in phases.ALL))


@dataclass(frozen=True)
class RunSummary:
    name: str
    root: str
    phase: int
    action_count: int
    created_at: float
    # Actions per phase; None for a run created before the counters existed.
    counts: dict[int, int] | None

    @classmethod
    def created(cls, name: str, root: str, created_at: float) -> RunSummary:
        """A run as its creation wrote it (admit.lua): its root queued, nothing else yet."""
        counts = dict.fromkeys(phases.ALL, 0)
        counts[phases.QUEUED] = 1
        return cls(name, root, phases.QUEUED, 1, created_at, counts)


@dataclass(frozen=True)
class ActionEntry:
    name: str
    phase: int
    attempt: int
    parent: str
    spec: bytes
    result: bytes  # empty until terminal


@dataclass(frozen=True)
class RunQuery:
    phases: frozenset[int] = frozenset()  # empty: every phase
    prefix: str = ""
    created_after: float = 0.0  # 0: no bound
    created_before: float = 0.0


@dataclass(frozen=True)
class ActionQuery:
    phases: frozenset[int] = frozenset()
    prefix: str = ""


def encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    """The state behind a cursor this module made for `kind`; a cursor from elsewhere is INVALID_ARGUMENT."""
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument("cursor is not one a previous page returned") from None
    if not isinstance(state, dict) or state.get("k") != kind:
        raise InvalidArgument("cursor is not one a previous page of this listing returned")
    return state


def _field(state: dict[str, Any], name: str, default: int) -> int:
    value = state.get(name, default)
    if not isinstance(value, int) or value < 0 or (name == "b" and not 0 < value <= 500):
        raise InvalidArgument("cursor is not one a previous page of this listing returned")
    return value


def _counts(raw: list[Any]) -> dict[int, int] | None:
    if raw[0] is None:  # no p1: the run predates the counters
        return None
    return {phase: int(value or 0) for phase, value in zip(phases.ALL, raw, strict=True)}


class Listing:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis: Any = redis  # bytes replies, as in ActionStore

    @fail_closed
    async def run_summary(self, tenant: str, run: str) -> RunSummary:
        raw = await self._redis.hmget(keys.TenantKeys(tenant).run(run), *_RUN_FIELDS)
        if raw[0] is None:
            raise NotFound(f"run {run!r} not found")
        return self._summary(run, raw)

    @staticmethod
    def _summary(run: str, raw: list[Any]) -> RunSummary:
        root, phase, count, created = raw[:4]
        return RunSummary(run, root.decode(), int(phase), int(count or 0), float(created or 0), _counts(raw[4:]))

    @fail_closed
    async def runs(self, tenant: str, query: RunQuery, limit: int, cursor: str) -> tuple[list[RunSummary], str]:
        """The tenant's runs matching `query`, newest first: (page, cursor of the next page or "")."""
        k = keys.TenantKeys(tenant)
        state = decode_cursor(cursor, "runs") if cursor else {}
        top: str = "+inf" if not query.created_before else f"({query.created_before!r}"
        after: tuple[float, str] | None = None
        if state:
            score, name = state.get("s"), state.get("n")
            if not isinstance(score, int | float) or not isinstance(name, str):
                raise InvalidArgument("cursor is not one a previous page of this listing returned")
            after = (float(score), name)
            top = repr(after[0])
        bottom = f"({query.created_after!r}" if query.created_after else "-inf"
        found: list[RunSummary] = []
        # Entries sharing the cursor's score come again (the range is inclusive there): skip up to the cursor.
        entries = await self._redis.zrevrangebyscore(
            k.run_index, top, bottom, start=0, num=SCAN_BUDGET, withscores=True
        )
        names = [
            (name.decode(), score)
            for name, score in entries
            if after is None or score < after[0] or name.decode() < after[1]
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, _ in names:
                pipe.hmget(k.run(name), *_RUN_FIELDS)
            metas = await pipe.execute() if names else []
        last: tuple[str, float] | None = None
        for (name, score), raw in zip(names, metas, strict=True):
            last = (name, score)
            if raw[0] is None:  # dropped between the index read and this one
                continue
            run = self._summary(name, raw)
            if (not query.phases or run.phase in query.phases) and name.startswith(query.prefix):
                found.append(run)
                if len(found) >= limit:
                    break
        more = len(found) >= limit or len(entries) >= SCAN_BUDGET
        if last is None or not more:
            return found, ""
        return found, encode_cursor({"k": "runs", "s": last[1], "n": last[0]})

    @fail_closed
    async def actions(
        self, tenant: str, run: str, query: ActionQuery, limit: int, cursor: str
    ) -> tuple[list[ActionEntry], str]:
        """The run's actions matching `query`: (page, cursor of the next page or "").

        Failures alone (FAILED or TIMED_OUT) come from the run's failure list, newest first. Any
        other query walks the run's states with HSCAN, in no particular order; an action admitted
        while a listing goes on may be missed or repeated, as HSCAN allows.
        """
        k = keys.TenantKeys(tenant)
        if not await self._redis.exists(k.run(run)):
            raise NotFound(f"run {run!r} not found")
        if query.phases and query.phases <= _FAILED:
            return await self._failures(k, run, query, limit, cursor)
        state = decode_cursor(cursor, "actions") if cursor else {}
        # The HSCAN count travels in the cursor: a batch read again with the same count is the same batch.
        scan_cursor, skip, batch = _field(state, "c", 0), _field(state, "skip", 0), _field(state, "b", min(limit, 500))
        picked: list[tuple[str, int, int, str]] = []
        read = 0
        next_state: dict[str, Any] | None = None
        while read < SCAN_BUDGET:
            following, entries = await self._redis.hscan(
                k.states(run), scan_cursor, match=f"{query.prefix}*" if query.prefix else None, count=batch
            )
            items = list(entries.items())
            for i in range(skip, len(items)):
                name, raw = items[i]
                phase, attempt, parent = raw.decode().split(":", 2)
                if not query.phases or int(phase) in query.phases:
                    picked.append((name.decode(), int(phase), int(attempt), parent))
                    if len(picked) >= limit:
                        if i + 1 < len(items):  # go on inside this HSCAN batch next time
                            next_state = {"k": "actions", "c": scan_cursor, "skip": i + 1, "b": batch}
                        elif int(following) != 0:
                            next_state = {"k": "actions", "c": int(following), "skip": 0, "b": batch}
                        return await self._with_specs(k, run, picked), encode_cursor(next_state) if next_state else ""
            read += len(items) - skip
            skip = 0
            scan_cursor = int(following)
            if scan_cursor == 0:
                return await self._with_specs(k, run, picked), ""
        next_state = {"k": "actions", "c": scan_cursor, "skip": 0, "b": batch}
        return await self._with_specs(k, run, picked), encode_cursor(next_state)

    @fail_closed
    async def output(self, tenant: str, run: str, name: str, attempt: int) -> bytes | None:
        """What that attempt printed (ActionStore.keep_outputs); None when nothing was kept (not ended)."""
        printed = await self._redis.hget(keys.TenantKeys(tenant).outputs(run), f"{name}/{attempt}")
        return bytes(printed) if printed is not None else None

    @fail_closed
    async def action(self, tenant: str, run: str, name: str) -> ActionEntry:
        """One action of the run, for a link to it."""
        k = keys.TenantKeys(tenant)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.states(run), name)
            pipe.hget(k.specs(run), name)
            pipe.hget(k.results(run), name)
            state, spec, result = await pipe.execute()
        if state is None:
            raise NotFound(f"action {name!r} not found in run {run!r}")
        phase, attempt, parent = state.decode().split(":", 2)
        return ActionEntry(name, int(phase), int(attempt), parent, spec or b"", result or b"")

    async def _failures(
        self, k: keys.TenantKeys, run: str, query: ActionQuery, limit: int, cursor: str
    ) -> tuple[list[ActionEntry], str]:
        offset = _field(decode_cursor(cursor, "failures"), "o", 0) if cursor else 0
        names = [n.decode() for n in await self._redis.lrange(k.failures(run), offset, offset + limit - 1)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(k.states(run), name)
            states = await pipe.execute() if names else []
        picked = []
        for name, raw in zip(names, states, strict=True):
            phase, attempt, parent = raw.decode().split(":", 2)
            if int(phase) in query.phases and name.startswith(query.prefix):
                picked.append((name, int(phase), int(attempt), parent))
        more = len(names) == limit
        return await self._with_specs(k, run, picked), encode_cursor(
            {"k": "failures", "o": offset + limit}
        ) if more else ""

    async def _with_specs(
        self, k: keys.TenantKeys, run: str, picked: Iterable[tuple[str, int, int, str]]
    ) -> list[ActionEntry]:
        picked = list(picked)
        if not picked:
            return []
        names = [p[0] for p in picked]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(k.specs(run), *names)
            pipe.hmget(k.results(run), *names)
            specs, results = await pipe.execute()
        return [
            ActionEntry(name, phase, attempt, parent, spec or b"", result or b"")
            for (name, phase, attempt, parent), spec, result in zip(picked, specs, results, strict=True)
        ]
