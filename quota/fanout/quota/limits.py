"""Per-tenant limits: server-wide defaults, overrides in Redis, audited changes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys
from fanout.quota.errors import InvalidArgument
from fanout.quota.failclosed import fail_closed
from fanout.quota.scripts import Scripts


@dataclass(frozen=True)
class Limits:
    max_fanout: int = 10_000
    max_concurrency: int = 64
    max_queued: int = 1_000_000
    max_payload_bytes: int = 1 << 20
    # Bytes of specs and results the tenant keeps in Redis, over all runs not yet dropped.
    max_stored_bytes: int = 1 << 30
    # How long a finished run of the tenant is kept before it is dropped.
    retention_seconds: int = 7 * 24 * 3600

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


# Bounds on what an admin may set, so a typo cannot make a limit meaningless.
LIMIT_CEILING = {
    "max_fanout": 10_000_000,
    "max_concurrency": 1_000_000,
    "max_queued": 100_000_000,
    "max_payload_bytes": 64 << 20,
    "max_stored_bytes": 1 << 40,
    "retention_seconds": 365 * 24 * 3600,
}


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    tenant: str
    limit: str
    old: int
    new: int
    reason: str


class LimitStore:
    def __init__(
        self, redis: aioredis.Redis, scripts: Scripts, defaults: Limits, clock: Callable[[], float] = time.time
    ) -> None:
        # Typed loosely: redis-py types replies as str | bytes; with decode_responses off they are bytes.
        self._redis: Any = redis
        self._scripts = scripts
        self.defaults = defaults
        self._clock = clock

    @fail_closed
    async def overrides(self, tenant: str) -> dict[str, int]:
        raw = await self._redis.hgetall(keys.TenantKeys(tenant).limits)
        return {k.decode(): int(v) for k, v in raw.items()}

    async def effective(self, tenant: str) -> Limits:
        return Limits(**{**asdict(self.defaults), **await self.overrides(tenant)})

    @fail_closed
    async def set(self, tenant: str, changes: dict[str, int], actor: str, reason: str) -> Limits:
        if not changes:
            raise InvalidArgument("no limit to change: give at least one of " + ", ".join(Limits.names()))
        for name, value in changes.items():
            if name not in LIMIT_CEILING:
                raise InvalidArgument(f"unknown limit {name!r}; known: {', '.join(Limits.names())}")
            if not 1 <= value <= LIMIT_CEILING[name]:
                raise InvalidArgument(f"{name} must be between 1 and {LIMIT_CEILING[name]}, got {value}")
        k = keys.TenantKeys(tenant)
        args: list[str | int | float] = [actor, self._clock(), reason, tenant, keys.AUDIT_MAX]
        for name, value in changes.items():
            args += [name, value, getattr(self.defaults, name)]
        await self._scripts.set_limits(keys=[k.limits, k.audit], args=args)
        return await self.effective(tenant)

    @fail_closed
    async def audit(self, tenant: str, limit: int = 100) -> list[AuditEntry]:
        raw = await self._redis.lrange(keys.TenantKeys(tenant).audit, 0, max(0, limit - 1))
        return [AuditEntry(**json.loads(item)) for item in raw]
