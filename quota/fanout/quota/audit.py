"""The audit trail: who did what to which tenant, when and why.

Entries are JSON in capped lists, newest first: each tenant's own list (limit
changes, its tokens, its requests; written in the same script as the change
where there is one), and one platform list for what concerns no single tenant
(admin tokens, dispatchers serving every tenant). Reads are bounded pages.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys
from fanout.quota.failclosed import fail_closed

# Entries read per round trip when filtering: each command stays small however long the trail is.
PAGE = 500


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    tenant: str
    limit: str = ""
    old: int = 0
    new: int = 0
    reason: str = ""
    action: str = "set_limit"
    subject: str = ""


def _key(tenant: str) -> str:
    return keys.TenantKeys(tenant).audit if tenant else keys.ADMIN_AUDIT


class AuditLog:
    def __init__(self, redis: aioredis.Redis, clock: Callable[[], float] = time.time) -> None:
        self._redis: Any = redis
        self._clock = clock

    @fail_closed
    async def record(self, tenant: str, action: str, actor: str, subject: str = "", reason: str = "") -> None:
        entry = AuditEntry(at=self._clock(), actor=actor, tenant=tenant, reason=reason, action=action, subject=subject)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(_key(tenant), json.dumps(asdict(entry)))
            pipe.ltrim(_key(tenant), 0, keys.AUDIT_MAX - 1)
            await pipe.execute()

    @fail_closed
    async def query(self, tenants: list[str], limit: int, actor: str = "", since: float = 0.0) -> list[AuditEntry]:
        """Newest first, over the given trails ("" is the platform's); at most `limit` entries.

        The newest `limit` entries of every trail are read in one pipelined round trip per chunk of
        trails; only a trail whose filtered entries fall short reads on, page by page, and every trail
        stops at its first entry older than `since`.
        """
        found: list[AuditEntry] = []
        first = min(limit, PAGE)
        for start in range(0, len(tenants), PAGE):
            chunk = tenants[start : start + PAGE]
            async with self._redis.pipeline(transaction=False) as pipe:
                for tenant in chunk:
                    pipe.lrange(_key(tenant), 0, first - 1)
                pages = await pipe.execute()
            for tenant, raw in zip(chunk, pages, strict=True):
                offset, matched = 0, 0
                while True:
                    entries = [AuditEntry(**json.loads(item)) for item in raw]
                    fresh = [e for e in entries if e.at >= since]
                    picked = [e for e in fresh if not actor or e.actor == actor]
                    found += picked
                    matched += len(picked)
                    offset += len(raw)
                    done = len(raw) < (first if offset == len(raw) else PAGE) or len(fresh) < len(entries)
                    if done or matched >= limit or offset >= keys.AUDIT_MAX:
                        break
                    raw = await self._redis.lrange(_key(tenant), offset, offset + PAGE - 1)
        return sorted(found, key=lambda e: e.at, reverse=True)[:limit]
