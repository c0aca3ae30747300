"""Traced calls inside actions (@fanout.trace, Flyte's @flyte.trace): recorded by the action, replayed to its retries.

A record is a TraceRecord (actions.proto) in the run's `tr:` hash under
"<action>/<key>", the key being the SDK's hash of the function and its
inputs. Only the attempt that holds the action's lease records (checked in
the same step, write_while_leased.lua), so nothing is written for an action
that ended or a run that was dropped. A run holds at most MAX_PER_RUN records; the hash goes
with the run (drop_run.lua).

Reads walk the run's hash with HSCAN in bounded steps, asking only for the
action's fields: a retry reads its records once, and a first attempt (the
SDK knows it has none) never asks.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys, phases
from fanout.quota.errors import FailedPrecondition, InvalidArgument, QuotaExceeded
from fanout.quota.failclosed import fail_closed
from fanout.quota.scripts import source
from fanout.v1 import actions_pb2 as pb

MAX_RECORDS = 1000  # per call
# Bytes of outputs per call (one record alone may be bigger, up to max_payload_bytes): what one
# script copies into Redis stays a few milliseconds' work.
MAX_BYTES_PER_CALL = 4 << 20
MAX_PER_RUN = 100_000
KEY_MAX = 128
# Fields HSCAN looks at per step, and steps per ListTraces page: each step is short, a page bounded.
SCAN_COUNT = 1000
SCAN_STEPS = 10


class TraceStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis: Any = redis
        self._record = redis.register_script(source("write_while_leased"))

    @fail_closed
    async def record(
        self, tenant: str, run: str, action: str, attempt: int, records: list[pb.TraceRecord], max_stored_bytes: int
    ) -> None:
        """Keep `records` of that running attempt; FailedPrecondition if it no longer runs or the run is full,
        QuotaExceeded past the tenant's max_stored_bytes."""
        if not 1 <= len(records) <= MAX_RECORDS:
            raise InvalidArgument(f"record 1 to {MAX_RECORDS} traces per call, not {len(records)}")
        size = sum(len(record.output) for record in records)
        if len(records) > 1 and size > MAX_BYTES_PER_CALL:
            raise InvalidArgument(f"record at most {MAX_BYTES_PER_CALL} bytes of outputs per call, not {size}")
        args: list[Any] = [action, attempt, phases.QUEUED, phases.SUCCEEDED, MAX_PER_RUN, max_stored_bytes]
        for record in records:
            if not record.key or len(record.key) > KEY_MAX or "/" in record.key:
                raise InvalidArgument(f"a trace key is 1 to {KEY_MAX} characters without '/'")
            record.attempt = attempt
            args += [f"{action}/{record.key}", record.SerializeToString()]
        k = keys.TenantKeys(tenant)
        done = await self._record(keys=[k.states(run), k.traces(run), k.run(run), k.stats], args=args)
        if isinstance(done, list):
            raise QuotaExceeded("max_stored_bytes", max_stored_bytes, int(done[1]), int(done[2]))
        if done == 0:
            raise FailedPrecondition(f"attempt {attempt} of action {action!r} is not running: nothing recorded")
        if done == -1:
            raise FailedPrecondition(f"run {run!r} holds {MAX_PER_RUN} traces already: nothing recorded")

    @fail_closed
    async def page(self, tenant: str, run: str, action: str, cursor: str) -> tuple[list[pb.TraceRecord], str]:
        """A page of the action's records and the cursor of the next ("" at the end)."""
        scan = int(cursor or 0)
        found: list[pb.TraceRecord] = []
        traces = keys.TenantKeys(tenant).traces(run)
        pattern = f"{_glob_escape(action)}/*"
        for _ in range(SCAN_STEPS):
            scan, fields = await self._redis.hscan(traces, scan, match=pattern, count=SCAN_COUNT)
            found += [pb.TraceRecord.FromString(value) for value in fields.values()]
            if scan == 0:
                break
        return found, str(scan) if scan else ""


def _glob_escape(text: str) -> str:
    """`text` matched literally by a Redis glob (action names are [A-Za-z0-9_-], but be exact)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
