"""Per-tenant limits: server-wide defaults, overrides in Redis, audited changes.

A limit may be set until a given time: the value it replaced is kept beside
it, and when the time passes the servers' periodic loop puts it back, audited
(expire_limits.lua).
"""

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
from fanout.quota.scripts import Scripts, source


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
class TemporaryLimit:
    limit: str
    value: int
    restores: int  # -1: the server default comes back
    expires: float


# Due expiries the periodic loop handles per pass: one bounded read, one short script per tenant.
EXPIRY_PAGE = 100


class LimitStore:
    def __init__(
        self, redis: aioredis.Redis, scripts: Scripts, defaults: Limits, clock: Callable[[], float] = time.time
    ) -> None:
        # Typed loosely: redis-py types replies as str | bytes; with decode_responses off they are bytes.
        self._redis: Any = redis
        self._scripts = scripts
        self.defaults = defaults
        self._clock = clock
        self._expire = redis.register_script(source("expire_limits"))

    @fail_closed
    async def overrides(self, tenant: str) -> dict[str, int]:
        raw = await self._redis.hgetall(keys.TenantKeys(tenant).limits)
        return {k.decode(): int(v) for k, v in raw.items()}

    async def effective(self, tenant: str) -> Limits:
        return Limits(**{**asdict(self.defaults), **await self.overrides(tenant)})

    @fail_closed
    async def temporary(self, tenant: str) -> list[TemporaryLimit]:
        raw = await self._redis.hgetall(keys.TenantKeys(tenant).limit_expiry)
        return sorted(
            (TemporaryLimit(name.decode(), **json.loads(value)) for name, value in raw.items()),
            key=lambda t: t.limit,
        )

    @fail_closed
    async def set(self, tenant: str, changes: dict[str, int], actor: str, reason: str, until: float = 0.0) -> Limits:
        """Change limits, audited. With `until`, the values before this change come back at that time."""
        if not changes:
            raise InvalidArgument("no limit to change: give at least one of " + ", ".join(Limits.names()))
        for name, value in changes.items():
            if name not in LIMIT_CEILING:
                raise InvalidArgument(f"unknown limit {name!r}; known: {', '.join(Limits.names())}")
            if not 1 <= value <= LIMIT_CEILING[name]:
                raise InvalidArgument(f"{name} must be between 1 and {LIMIT_CEILING[name]}, got {value}")
        now = self._clock()
        if until and until <= now:
            raise InvalidArgument(f"the expiry must be in the future, got {until} (now {now:.0f})")
        k = keys.TenantKeys(tenant)
        if until:
            # Indexed before the change: a failure between the two leaves an entry that finds nothing due.
            await self._redis.zadd(keys.LIMIT_EXPIRIES, {f"{tenant}/{name}/{until!r}": until for name in changes})
        args: list[str | int | float] = [actor, now, reason, tenant, keys.AUDIT_MAX, until]
        for name, value in changes.items():
            args += [name, value, getattr(self.defaults, name)]
        await self._scripts.set_limits(keys=[k.limits, k.audit, k.limit_expiry], args=args)
        return await self.effective(tenant)

    @fail_closed
    async def expire_due(self) -> int:
        """Restore the values that limits set with an expiry replaced, for the due ones; how many were restored.

        Two servers at once restore each at most once: the script restores only the entries still
        stored and due, and removes each as it restores it.
        """
        now = self._clock()
        due = await self._redis.zrangebyscore(keys.LIMIT_EXPIRIES, "-inf", now, start=0, num=EXPIRY_PAGE)
        restored = 0
        for member in due:
            tenant = member.decode().split("/", 1)[0]
            k = keys.TenantKeys(tenant)
            restored += int(
                await self._expire(keys=[k.limits, k.audit, k.limit_expiry], args=[now, tenant, keys.AUDIT_MAX])
            )
            await self._redis.zrem(keys.LIMIT_EXPIRIES, member)
        return restored
