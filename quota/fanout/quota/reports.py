"""Action reports (fanout.report, Flyte's flyte.report): an HTML page a task writes as it goes.

The page is the last one its task flushed, in the run's `rep:` hash under
the action's name. Only the attempt holding the action's lease writes it
(write_while_leased.lua), so an action that ended keeps its last page and a
dropped run takes it along (drop_run.lua).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys, phases
from fanout.quota.errors import FailedPrecondition, QuotaExceeded
from fanout.quota.failclosed import fail_closed
from fanout.quota.scripts import source


class ReportStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis: Any = redis
        self._write = redis.register_script(source("write_while_leased"))

    @fail_closed
    async def put(self, tenant: str, run: str, action: str, attempt: int, page: bytes, max_stored_bytes: int) -> None:
        """Keep `page` as the action's report; FailedPrecondition if that attempt does not hold its lease,
        QuotaExceeded past the tenant's max_stored_bytes."""
        k = keys.TenantKeys(tenant)
        args = [action, attempt, phases.QUEUED, phases.SUCCEEDED, 0, max_stored_bytes, action, page]
        done = await self._write(keys=[k.states(run), k.reports(run), k.run(run), k.stats], args=args)
        if isinstance(done, list):
            raise QuotaExceeded("max_stored_bytes", max_stored_bytes, int(done[1]), int(done[2]))
        if not done:
            raise FailedPrecondition(f"attempt {attempt} of action {action!r} is not running: its report is kept")

    @fail_closed
    async def get(self, tenant: str, run: str, action: str) -> bytes | None:
        page = await self._redis.hget(keys.TenantKeys(tenant).reports(run), action)
        return bytes(page) if page is not None else None
