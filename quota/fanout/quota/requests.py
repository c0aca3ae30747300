"""Limit requests: a tenant asks for more, an admin approves or denies.

A request lives in its tenant's hash (so deciding it and applying its limits
is one script on one hash slot) and, while pending, in a platform index that
admins list without walking every tenant. Its id starts with the tenant's
name, so an id alone finds it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys
from fanout.quota.errors import FailedPrecondition, InvalidArgument, NotFound
from fanout.quota.failclosed import fail_closed
from fanout.quota.limits import LIMIT_CEILING, LimitStore
from fanout.quota.scripts import source

STATES = ("pending", "approved", "denied")
REASON_MAX = 1000
# Tenants read per pipelined round trip when listing over many.
CHUNK = 200


@dataclass(frozen=True)
class LimitRequest:
    id: str
    tenant: str
    requester: str
    limits: dict[str, int]
    reason: str
    state: str = "pending"
    created_at: float = 0.0
    decided_by: str = ""
    decided_at: float = 0.0
    decision_reason: str = ""


def _parse(raw: bytes) -> LimitRequest:
    data = json.loads(raw)
    # cjson encodes an empty table as an object; limits always has entries, but be lenient.
    data["limits"] = {k: int(v) for k, v in (data.get("limits") or {}).items()}
    return LimitRequest(**data)


def _at_cap() -> FailedPrecondition:
    return FailedPrecondition(f"{keys.REQUESTS_MAX} requests are pending; wait for an admin to decide some")


def tenant_of(request_id: str) -> str:
    return request_id.split(".", 1)[0]


class RequestStore:
    def __init__(self, redis: aioredis.Redis, limits: LimitStore, clock: Callable[[], float] = time.time) -> None:
        self._redis: Any = redis
        self._limits = limits
        self._clock = clock
        self._decide = redis.register_script(source("decide_request"))
        self._file = redis.register_script(source("file_request"))

    @fail_closed
    async def file(self, tenant: str, requester: str, limits: dict[str, int], reason: str) -> LimitRequest:
        if not limits:
            raise InvalidArgument("ask for at least one limit, e.g. --max-fanout N")
        for name, value in limits.items():
            if name not in LIMIT_CEILING or not 1 <= value <= LIMIT_CEILING[name]:
                raise InvalidArgument(f"{name} must be between 1 and {LIMIT_CEILING.get(name, 0)}, got {value}")
        if not reason.strip() or len(reason) > REASON_MAX:
            raise InvalidArgument(f"give a reason (1 to {REASON_MAX} characters): an admin decides on it")
        k = keys.TenantKeys(tenant)
        if await self._redis.hlen(k.requests) >= keys.REQUESTS_MAX:
            await self._forget_oldest_decided(tenant)
            if await self._redis.hlen(k.requests) >= keys.REQUESTS_MAX:
                raise _at_cap()
        request = LimitRequest(
            id=f"{tenant}.{secrets.token_hex(4)}",
            tenant=tenant,
            requester=requester,
            limits=limits,
            reason=reason,
            created_at=self._clock(),
        )
        filed = await self._file(keys=[k.requests], args=[keys.REQUESTS_MAX, request.id, json.dumps(asdict(request))])
        if not filed:  # others filed the last room meanwhile
            raise _at_cap()
        # Another hash slot on a cluster: indexed after it is filed, so the index names only stored requests.
        await self._redis.zadd(keys.PENDING_REQUESTS, {request.id: request.created_at})
        return request

    async def _forget_oldest_decided(self, tenant: str) -> None:
        """Make room: the older half of the decided requests goes (their decisions stay in the audit trail)."""
        decided = sorted((r for r in await self.of_tenant(tenant) if r.state != "pending"), key=lambda r: r.created_at)
        if decided:
            await self._redis.hdel(keys.TenantKeys(tenant).requests, *[r.id for r in decided[: len(decided) // 2 + 1]])

    async def of_tenant(self, tenant: str, state: str = "") -> list[LimitRequest]:
        """Newest first; at most REQUESTS_MAX are kept, so one read."""
        return await self.of_tenants([tenant], state)

    @fail_closed
    async def of_tenants(self, tenants: list[str], state: str = "") -> list[LimitRequest]:
        """Every request of these tenants, newest first: one pipelined round trip per chunk of tenants."""
        found: list[LimitRequest] = []
        for start in range(0, len(tenants), CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for tenant in tenants[start : start + CHUNK]:
                    pipe.hvals(keys.TenantKeys(tenant).requests)
                for raw in await pipe.execute():
                    found += [r for r in map(_parse, raw) if not state or r.state == state]
        return sorted(found, key=lambda r: r.created_at, reverse=True)

    @fail_closed
    async def pending(self, limit: int = 1000) -> list[LimitRequest]:
        """Every tenant's pending requests, newest first, from the index (at most `limit`)."""
        ids = [i.decode() for i in await self._redis.zrevrange(keys.PENDING_REQUESTS, 0, limit - 1)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for request_id in ids:
                pipe.hget(keys.TenantKeys(tenant_of(request_id)).requests, request_id)
            raw = await pipe.execute()
        return [r for r in (_parse(x) for x in raw if x) if r.state == "pending"]

    @fail_closed
    async def decide(self, request_id: str, approve: bool, actor: str, reason: str) -> LimitRequest:
        tenant = tenant_of(request_id)
        if not keys.TENANT_RE.match(tenant) or len(request_id) > 100:
            raise NotFound(f"request {request_id!r} not found")
        if not reason.strip() or len(reason) > REASON_MAX:
            raise InvalidArgument(f"give a reason (1 to {REASON_MAX} characters): it is audited and the tenant sees it")
        k = keys.TenantKeys(tenant)
        args: list[str | float | int] = [
            request_id, "approved" if approve else "denied", actor, self._clock(), reason, keys.AUDIT_MAX
        ]  # fmt: skip
        for name in LIMIT_CEILING:
            args += [name, getattr(self._limits.defaults, name)]
        reply = await self._decide(keys=[k.requests, k.limits, k.audit, k.limit_expiry], args=args)
        status = reply[0].decode()
        if status == "NOT_FOUND":
            raise NotFound(f"request {request_id!r} not found")
        await self._redis.zrem(keys.PENDING_REQUESTS, request_id)
        if status == "DECIDED":
            raise FailedPrecondition(f"request {request_id} was already {reply[1].decode()}")
        return _parse(reply[1])
