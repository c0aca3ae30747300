"""Run and action listings, and the per-phase counts the run page shows, on a real Redis.

The store is driven directly (a Redis of this module's own, so the session's dispatcher leases
nothing here) with the clock in the test's hands. Every count is checked against the truth: the
states hash itself, read whole, which only a test may do.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from fanout import errors
from fanout.quota import keys
from fanout.quota.actions import ActionStore, LeaseRef, Report
from fanout.quota.errors import InvalidArgument, NotFound
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.listing import SCAN_BUDGET, ActionQuery, Listing, RunQuery, RunSummary, encode_cursor
from fanout.quota.phases import ABORTED, FAILED, QUEUED, RUNNING, SUCCEEDED, TIMED_OUT
from fanout.quota.scripts import Scripts
from fanout.server.redis_process import RedisProcess
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant
from tests.helpers import Clock


class World:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.clock = Clock()
        scripts = Scripts.register(client)
        self.limits = LimitStore(client, scripts, Limits(max_fanout=100_000, max_queued=100_000), self.clock)
        self.store = ActionStore(client, scripts, self.limits, clock=self.clock, lease_seconds=10)
        self.listing = Listing(client)

    async def truth(self, tenant: str, run: str) -> Counter[int]:
        states = await self.client.hgetall(keys.TenantKeys(tenant).states(run))
        return Counter(int((v.decode() if isinstance(v, bytes) else v).split(":", 1)[0]) for v in states.values())

    async def close_all(self, tenant: str) -> None:
        while await self.client.zcard(keys.TenantKeys(tenant).closing):
            await self.store.close_finished_runs(tenant)

    async def counts(self, tenant: str, run: str) -> Counter[int]:
        summary = await self.listing.run_summary(tenant, run)
        assert summary.counts is not None
        return Counter({phase: n for phase, n in summary.counts.items() if n})


def within(own_redis: RedisProcess, body: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(own_redis.url)
        try:
            await body(World(client))
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_new_run_reads_back_as_its_creation_says_it_was_written(own_redis: RedisProcess) -> None:
    """CreateRun answers with the run as its admission wrote it (RunSummary.created), not read back."""
    tenant = "created-1"

    async def body(w: World) -> None:
        created_at = await w.store.create_run(tenant, "r", "root", b"root")
        assert created_at is not None
        assert await w.listing.run_summary(tenant, "r") == RunSummary.created("r", "root", created_at)
        assert await w.store.create_run(tenant, "r", "root", b"root") is None  # it exists

    within(own_redis, body)


def test_create_run_answers_what_get_run_reads(own_tenant: Tenant) -> None:
    """On a control plane no dispatcher leases from: nothing moves the run between the two calls."""
    spec = pb.ActionSpec(task_ref="module:os:getcwd", command=["true"], max_queued_seconds=60)
    created = own_tenant.client.create_run(spec)
    assert created.phase_counts == {"QUEUED": 1}
    assert created == own_tenant.client.get_run(created.name)


def test_phase_counts_follow_every_move_an_action_makes(own_redis: RedisProcess) -> None:
    tenant = "count-1"

    async def body(w: World) -> None:
        s = w.store

        async def check() -> None:
            assert await w.counts(tenant, "r") == await w.truth(tenant, "r")

        await s.create_run(tenant, "r", "root", b"root")
        await check()
        (root,) = await s.lease(tenant, 1)
        await s.report(tenant, [Report("r", "root", root.attempt, RUNNING)])
        # 2,500 children: more than one script admits, so staged and moved in chunks.
        await s.admit(tenant, "r", "root", [(f"c{i}", b"spec") for i in range(2500)])
        await check()
        leased = await s.lease(tenant, 40)
        assert len(leased) == 40
        await check()
        a, b, c, d, *rest = leased
        await s.report(
            tenant,
            [
                Report("r", a.name, a.attempt, RUNNING),
                Report("r", b.name, b.attempt, SUCCEEDED, b"out"),
                Report("r", c.name, c.attempt, FAILED, b"err"),
                Report("r", d.name, d.attempt, FAILED, b"err", retry_after=60),  # back to the queue
                Report("r", rest[0].name, rest[0].attempt, TIMED_OUT, b"late"),
            ],
        )
        await check()
        # The other leases expire (the root's is renewed): queued again, counted back to QUEUED.
        w.clock.now += 6
        await s.heartbeat(tenant, [LeaseRef("r", "root", root.attempt)])
        w.clock.now += 5
        await s.reap(tenant)
        await check()
        # The root fails: the run closes and every unfinished action is aborted, in steps.
        await s.report(tenant, [Report("r", "root", root.attempt, FAILED, b"boom")])
        await w.close_all(tenant)
        await check()
        counts = await w.counts(tenant, "r")
        assert counts[SUCCEEDED] == 1 and counts[FAILED] == 2 and counts[TIMED_OUT] == 1
        assert counts[ABORTED] == 2501 - 4 and counts[QUEUED] == 0
        assert sum(counts.values()) == (await w.listing.run_summary(tenant, "r")).action_count

        # AbortRun: the root first (abort.lua), then the rest in steps.
        await s.create_run(tenant, "r2", "root", b"root")
        await s.lease(tenant, 1)  # the root runs
        await s.admit(tenant, "r2", "root", [(f"c{i}", b"spec") for i in range(300)])
        await s.lease(tenant, 10)
        assert await s.abort_run(tenant, "r2") == 301
        assert await w.counts(tenant, "r2") == await w.truth(tenant, "r2") == Counter({ABORTED: 301})

    within(own_redis, body)


def test_runs_list_newest_first_by_cursor_with_filters_and_leave_the_index_when_dropped(
    own_redis: RedisProcess,
) -> None:
    tenant = "runs-1"

    async def body(w: World) -> None:
        s = w.store
        for i in range(30):
            w.clock.now += 1
            await s.create_run(tenant, f"{'a' if i % 2 else 'b'}run{i:02d}", "root", b"")
        names = [f"{'a' if i % 2 else 'b'}run{i:02d}" for i in reversed(range(30))]

        seen, cursor = [], ""
        while True:
            page, cursor = await w.listing.runs(tenant, RunQuery(), 7, cursor)
            assert len(page) <= 7
            seen += [r.name for r in page]
            if not cursor:
                break
        assert seen == names  # newest first, each once

        only_a, _ = await w.listing.runs(tenant, RunQuery(prefix="a"), 100, "")
        assert [r.name for r in only_a] == [n for n in names if n.startswith("a")]
        start = 1_000_000.0
        window, _ = await w.listing.runs(tenant, RunQuery(created_after=start + 10, created_before=start + 14), 100, "")
        assert [r.name for r in window] == ["brun12", "arun11", "brun10"]  # created at +13, +12, +11

        # One run finishes; the phase filter finds it alone.
        (root,) = [x for x in await s.lease(tenant, 30) if x.run == "arun29"]
        await s.report(tenant, [Report(root.run, root.name, root.attempt, SUCCEEDED, b"")])
        await w.close_all(tenant)
        done, _ = await w.listing.runs(tenant, RunQuery(phases=frozenset({SUCCEEDED})), 100, "")
        assert [r.name for r in done] == [root.run]

        # Dropped by retention: out of the listing too.
        await w.limits.set(tenant, {"retention_seconds": 1}, actor="test", reason="test")
        w.clock.now += 10
        assert await s.drop_expired_runs(tenant) == 1
        after, _ = await w.listing.runs(tenant, RunQuery(), 100, "")
        assert root.run not in {r.name for r in after} and len(after) == 29

        with pytest.raises(InvalidArgument):
            await w.listing.runs(tenant, RunQuery(), 10, "not-a-cursor")
        page_of_actions = (await w.listing.actions(tenant, "arun01", ActionQuery(), 1, ""))[1]
        with pytest.raises(InvalidArgument):  # a cursor of another listing
            await w.listing.runs(tenant, RunQuery(), 10, page_of_actions or "eyJrIjoiYWN0aW9ucyJ9")

    within(own_redis, body)


def test_a_runs_actions_page_by_cursor_each_once_and_failures_newest_first(own_redis: RedisProcess) -> None:
    tenant = "acts-1"

    async def body(w: World) -> None:
        s = w.store
        await s.create_run(tenant, "big", "root", b"root")
        (root,) = await s.lease(tenant, 1)
        total = SCAN_BUDGET + 500  # more than one call reads
        await s.admit(tenant, "big", "root", [(f"c{i}", b"spec") for i in range(total - 1)])

        seen: list[str] = []
        cursor, calls = "", 0
        while True:
            page, cursor = await w.listing.actions(tenant, "big", ActionQuery(), 333, cursor)
            calls += 1
            assert len(page) <= 333
            seen += [a.name for a in page]
            if not cursor:
                break
        assert sorted(seen) == sorted(["root"] + [f"c{i}" for i in range(total - 1)])
        assert calls >= total // 333

        prefixed, _ = await w.listing.actions(tenant, "big", ActionQuery(prefix="c123"), 100, "")
        assert {a.name for a in prefixed} == {"c123", *(f"c123{i}" for i in range(10))}  # c0 .. c2498

        leased = await s.lease(tenant, 5)
        for i, x in enumerate(leased):
            w.clock.now += 1
            await s.report(tenant, [Report("big", x.name, x.attempt, FAILED, f"error {i}".encode())])
        failures, cursor = await w.listing.actions(tenant, "big", ActionQuery(phases=frozenset({FAILED})), 3, "")
        assert [f.name for f in failures] == [x.name for x in reversed(leased)][:3]
        assert failures[0].result == b"error 4" and failures[0].spec == b"spec"
        more, cursor = await w.listing.actions(tenant, "big", ActionQuery(phases=frozenset({FAILED})), 3, cursor)
        assert [f.name for f in more] == [x.name for x in reversed(leased)][3:]
        queued, _ = await w.listing.actions(tenant, "big", ActionQuery(phases=frozenset({RUNNING})), 10, "")
        assert queued == []
        assert root.name == "root"

        with pytest.raises(NotFound):
            await w.listing.actions(tenant, "nope", ActionQuery(), 10, "")
        with pytest.raises(NotFound):  # another tenant's run is missing, not forbidden
            await w.listing.actions("acts-2", "big", ActionQuery(), 10, "")

    within(own_redis, body)


def refusal(call: Callable[[Any], object], request: object) -> str:
    try:
        call(request)
    except errors.InvalidRequest:
        return "bad"
    return "accepted"


def test_listing_requests_out_of_bounds_are_invalid_and_a_foreign_run_is_not_found(tenant: Tenant) -> None:
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["true"])).name
    bad_runs = {
        "limit": pb.ListRunsRequest(limit=5000),
        "phase": pb.ListRunsRequest(phases=[99]),
        "prefix": pb.ListRunsRequest(name_prefix="Not A Run"),
        "cursor": pb.ListRunsRequest(cursor="garbage"),
        "time": pb.ListRunsRequest(created_after=-1),
    }
    assert {what: refusal(tenant.client.list_runs, r) for what, r in bad_runs.items()} == dict.fromkeys(bad_runs, "bad")
    bad_actions = {
        "run": pb.ListActionsRequest(run="Bad Run"),
        "limit": pb.ListActionsRequest(run=run, limit=1001),
        "prefix": pb.ListActionsRequest(run=run, name_prefix="a b"),
        "group": pb.ListActionsRequest(run=run, group="g" * 300),
        "cursor": pb.ListActionsRequest(run=run, cursor=encode_cursor({"k": "actions", "c": -1})),
    }
    got = {what: refusal(tenant.client.list_actions, r) for what, r in bad_actions.items()}
    assert got == dict.fromkeys(bad_actions, "bad")
    assert [r.name for r in tenant.client.list_runs(pb.ListRunsRequest()).runs] == [run]
    with pytest.raises(errors.NotFound):
        tenant.client.list_actions(pb.ListActionsRequest(run="no-such-run"))
