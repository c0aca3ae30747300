"""Where a tenant's actions run: serverless (any dispatcher) or BYOC (only dispatchers scoped to it).

Stored as the tenant's `placement` key ("byoc", or absent for serverless),
which lease.lua reads in the same step as it leases. A change and its audit
entry are written in one MULTI, after a WATCH of the key, so the old value
audited is the one replaced, whoever changes it at the same time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from fanout.quota import keys
from fanout.quota.audit import AuditEntry
from fanout.quota.errors import FailedPrecondition, InvalidArgument
from fanout.quota.failclosed import fail_closed

SERVERLESS = "serverless"
BYOC = "byoc"
# Audited as numbers, like a limit: the position of each value here.
PLACEMENT_VALUES = (SERVERLESS, BYOC)
# Changes tried at once by other admins make a WATCH fail; this many tries, then an error.
MAX_TRIES = 5
MAX_REASON = 1000


class PlacementStore:
    def __init__(self, redis: aioredis.Redis, clock: Callable[[], float] = time.time) -> None:
        self._redis: Any = redis
        self._clock = clock

    @fail_closed
    async def get(self, tenant: str) -> str:
        stored = await self._redis.get(keys.TenantKeys(tenant).placement)
        return BYOC if stored == b"byoc" else SERVERLESS

    @fail_closed
    async def set(self, tenant: str, placement: str, actor: str, reason: str) -> str:
        """Set the placement, audited with the old value; the placement now in force."""
        if placement not in PLACEMENT_VALUES:
            raise InvalidArgument(f"placement must be one of {', '.join(PLACEMENT_VALUES)}, not {placement!r}")
        if not reason.strip():
            raise InvalidArgument("a placement change needs a reason: it is audited")
        if len(reason) > MAX_REASON:
            raise InvalidArgument(f"the reason is {len(reason)} characters; at most {MAX_REASON}")
        k = keys.TenantKeys(tenant)
        for _ in range(MAX_TRIES):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(k.placement)
                    old = BYOC if await pipe.get(k.placement) == b"byoc" else SERVERLESS
                    entry = AuditEntry(
                        at=self._clock(),
                        actor=actor,
                        tenant=tenant,
                        limit="placement",
                        old=PLACEMENT_VALUES.index(old),
                        new=PLACEMENT_VALUES.index(placement),
                        reason=reason,
                        action="set_placement",
                        subject=f"{old} -> {placement}",
                    )
                    pipe.multi()
                    if placement == BYOC:
                        pipe.set(k.placement, BYOC)
                    else:
                        pipe.delete(k.placement)
                    pipe.lpush(k.audit, json.dumps(asdict(entry)))
                    pipe.ltrim(k.audit, 0, keys.AUDIT_MAX - 1)
                    await pipe.execute()
                    return placement
                except WatchError:
                    continue  # changed meanwhile: read the new old value and try again
        raise FailedPrecondition(f"the placement of {tenant!r} is being changed by someone else; try again")
