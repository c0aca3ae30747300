"""Tenants as admins see them: the list, usage beside limits, and deletion."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys
from fanout.quota.actions import ActionStore
from fanout.quota.errors import FailedPrecondition, NotFound
from fanout.quota.failclosed import fail_closed
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.placement import BYOC, SERVERLESS, PlacementStore
from fanout.quota.tokens import TokenStore

# A limit in use at this fraction or more is "near": worth an admin's look before it refuses work.
NEAR_LIMIT_FRACTION = 0.8
# Keys read or deleted per round trip: each command stays small however big the tenant is.
CHUNK = 500


@dataclass(frozen=True)
class TenantUsage:
    tenant: str
    limits: Limits
    running: int
    queued: int
    stored_bytes: int
    placement: str = SERVERLESS

    @property
    def near(self) -> list[str]:
        used = {
            "max_concurrency": self.running,
            "max_queued": self.queued,
            "max_stored_bytes": self.stored_bytes,
        }
        return [name for name, value in used.items() if value >= NEAR_LIMIT_FRACTION * getattr(self.limits, name)]


class TenantStore:
    def __init__(self, redis: aioredis.Redis, actions: ActionStore, limits: LimitStore, tokens: TokenStore) -> None:
        self._redis: Any = redis
        self._actions = actions
        self._limits = limits
        self._tokens = tokens
        self.placement = PlacementStore(redis)

    @fail_closed
    async def exists(self, tenant: str) -> bool:
        return bool(await self._redis.sismember(keys.TENANTS, tenant))

    @fail_closed
    async def names(self) -> list[str]:
        """Every tenant, sorted; read with SSCAN in chunks, so no single command is big however many there are."""
        return sorted([t.decode() async for t in self._redis.sscan_iter(keys.TENANTS, count=CHUNK)])

    async def page(self, after: str, limit: int) -> tuple[list[str], str]:
        """Up to `limit` tenant names after `after`, sorted, and the cursor for the next page ("" at the end)."""
        names = [n for n in await self.names() if n > after]
        page = names[:limit]
        return page, page[-1] if len(names) > limit else ""

    @fail_closed
    async def usage(self, tenants: list[str]) -> list[TenantUsage]:
        """Limits beside usage for each tenant: two pipelined round trips per chunk of tenants."""
        out: list[TenantUsage] = []
        for start in range(0, len(tenants), CHUNK):
            chunk = tenants[start : start + CHUNK]
            async with self._redis.pipeline(transaction=False) as pipe:
                for tenant in chunk:
                    k = keys.TenantKeys(tenant)
                    pipe.hgetall(k.limits)
                    pipe.hmget(k.stats, ["queued", "bytes"])
                    pipe.scard(k.slots)
                    pipe.get(k.placement)
                replies = await pipe.execute()
            for i, tenant in enumerate(chunk):
                overrides, (queued, stored), running, placement = replies[4 * i : 4 * i + 4]
                limits = Limits(**{**vars(self._limits.defaults), **{k.decode(): int(v) for k, v in overrides.items()}})
                where = BYOC if placement == b"byoc" else SERVERLESS
                usage = TenantUsage(tenant, limits, int(running), int(queued or 0), max(0, int(stored or 0)), where)
                out.append(usage)
        return out

    @fail_closed
    async def delete(self, tenant: str, force: bool) -> tuple[int, int]:
        """Revoke the tenant's tokens, abort its runs and drop its keys (its audit trail stays);
        (tokens revoked, keys deleted).

        Refused while actions of the tenant are admitted and unfinished, unless `force`. Tenant names
        hold no glob characters (keys.TENANT_RE), so the SCAN patterns match this tenant's keys only.
        """
        if not await self.exists(tenant):
            raise NotFound(f"tenant {tenant!r} not found")
        unfinished = await self._actions.queued(tenant) + await self._actions.running(tenant)
        if unfinished and not force:
            raise FailedPrecondition(
                f"tenant {tenant!r} has {unfinished} unfinished actions; abort its runs first, or pass --force"
            )
        k = keys.TenantKeys(tenant)
        # Out of the set first: leasing and the periodic loop stop visiting it, and no new token is minted for it.
        await self._redis.srem(keys.TENANTS, tenant)
        revoked = 0
        for token in await self._tokens.list_tokens(tenant):
            revoked += await self._tokens.revoke_id(token.id)
        if unfinished:
            # Aborted first (each abort a bounded walk), so dispatchers are told to stop what they run.
            async for key in self._redis.scan_iter(match=k.every_run, count=CHUNK):
                with contextlib.suppress(NotFound):  # dropped meanwhile by retention
                    await self._actions.abort_run(tenant, k.run_name(key.decode()))
        async for request_id, _ in self._redis.zscan_iter(keys.PENDING_REQUESTS, match=f"{tenant}.*", count=CHUNK):
            await self._redis.zrem(keys.PENDING_REQUESTS, request_id)
        deleted = 0
        batch: list[bytes] = []
        async for key in self._redis.scan_iter(match=k.every_key, count=CHUNK):
            if key.decode() != k.audit:
                batch.append(key)
            if len(batch) >= CHUNK:
                deleted += await self._redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await self._redis.unlink(*batch)
        return revoked, deleted
