"""Leases, and the events they end in, against a real Redis with the clock in the test's hands
(the store takes it injected).

The Redis is this module's own: the session's has a dispatcher leasing
whatever it finds, which would race these tests for their actions.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from fanout.quota import keys
from fanout.quota.actions import ActionStore, LeaseRef, Report
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.phases import FAILED, INITIALIZING, QUEUED, RUNNING, SUCCEEDED
from fanout.quota.scripts import Scripts
from fanout.server.redis_process import RedisProcess
from fanout.v1 import actions_pb2 as pb
from tests.helpers import Clock

T = TypeVar("T")
_tenants = itertools.count()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    store = RedisProcess(tmp_path_factory.mktemp("leases-redis")).start()
    yield store
    store.stop()


def with_store(redis_server: RedisProcess, body: Callable[[ActionStore, Clock, str], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = aioredis.Redis.from_url(redis_server.url)
        clock = Clock()
        scripts = Scripts.register(redis)
        store = ActionStore(
            redis, scripts, LimitStore(redis, scripts, Limits(), clock), lease_seconds=10, max_attempts=3, clock=clock
        )
        tenant = f"leases-{next(_tenants)}"
        await store.register_tenant(tenant)
        try:
            return await body(store, clock, tenant)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def test_a_lost_lease_is_requeued_and_the_third_loss_fails_the_action(own_redis: RedisProcess) -> None:
    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        await store.create_run(tenant, "r1", "root", b"spec")
        for attempt in (1, 2, 3):
            (leased,) = await store.lease(tenant, 10)
            assert leased.attempt == attempt
            clock.now += 5
            assert await store.reap(tenant) == (0, 0)  # not expired yet
            clock.now += 6
            assert await store.reap(tenant) == ((1, 0) if attempt < 3 else (0, 1))

        _, _, phase, attempt, result = await store.get_action(tenant, "r1", "root")
        assert (phase, attempt) == (FAILED, 3)
        assert pb.ActionResult.FromString(result).error.type == "LeaseLost"
        assert (await store.get_run(tenant, "r1")).phase == FAILED
        assert await store.queued(tenant) == 0
        assert await store.running(tenant) == 0

    with_store(own_redis, body)


def test_retries_do_not_use_up_lost_lease_protection(own_redis: RedisProcess) -> None:
    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        await store.create_run(tenant, "r1", "root", b"spec")
        for attempt in (1, 2):  # the task fails and asks for a retry
            (leased,) = await store.lease(tenant, 10)
            assert leased.attempt == attempt
            assert await store.report(tenant, [Report("r1", "root", attempt, FAILED, b"", retry_after=1.0)]) == 0
            assert (await store.get_action(tenant, "r1", "root"))[2] == QUEUED
            assert await store.lease(tenant, 10) == []  # its backoff has not passed
            clock.now += 1.5
        (third,) = await store.lease(tenant, 10)
        assert third.attempt == 3
        clock.now += 11  # the third attempt's dispatcher dies: the first lost lease
        assert await store.reap(tenant) == (1, 0)
        (again,) = await store.lease(tenant, 10)
        assert again.attempt == 4

    with_store(own_redis, body)


def test_a_heartbeat_keeps_a_lease_and_names_waiting_and_stale_ones(own_redis: RedisProcess) -> None:
    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        await store.create_run(tenant, "r1", "root", b"spec")
        (root,) = await store.lease(tenant, 10)
        await store.admit(tenant, "r1", "root", [("c1", b"spec")])  # the root now waits on a child
        clock.now += 8
        waiting, cancelled = await store.heartbeat(
            tenant, [LeaseRef("r1", "root", root.attempt), LeaseRef("r1", "root", root.attempt + 1)]
        )
        assert [r.attempt for r in waiting] == [root.attempt]
        assert [r.attempt for r in cancelled] == [root.attempt + 1]  # not the attempt that holds the lease
        clock.now += 8  # 16 s after the lease, 8 after the heartbeat
        assert await store.reap(tenant) == (0, 0)

    with_store(own_redis, body)


def test_a_lost_attempts_late_report_is_ignored_while_the_action_waits_to_run_again(own_redis: RedisProcess) -> None:
    """A reclaimed action keeps its attempt number until it is leased again; its old holder's report is stale."""

    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        await store.create_run(tenant, "r1", "root", b"spec")
        (lost,) = await store.lease(tenant, 10)
        clock.now += 11  # its dispatcher went quiet: the lease is reclaimed
        assert await store.reap(tenant) == (1, 0)
        # The old holder was still running it and now reports its failure (its token was refused meanwhile).
        assert await store.report(tenant, [Report("r1", "root", lost.attempt, FAILED, b"")]) == 1  # ignored
        assert (await store.get_action(tenant, "r1", "root"))[2] == QUEUED
        assert (await store.get_run(tenant, "r1")).phase != FAILED
        (again,) = await store.lease(tenant, 10)
        assert again.attempt == lost.attempt + 1

    with_store(own_redis, body)


def test_reports_of_one_action_in_one_call_apply_in_order_and_end_it_once(own_redis: RedisProcess) -> None:
    """A later report in a call sees what an earlier one in the same call did: here, that the action
    has ended, so a second terminal report is ignored (exactly one terminal phase)."""

    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        await store.create_run(tenant, "r1", "root", b"spec")
        await store.admit(tenant, "r1", "root", [("c0", b"spec"), ("c1", b"spec")])
        leased = {a.name: a for a in await store.lease(tenant, 10)}
        attempt = leased["c0"].attempt
        reports = [
            Report("r1", "c0", attempt, RUNNING),
            Report("r1", "c0", attempt, SUCCEEDED, b"first"),
            Report("r1", "c0", attempt, FAILED, b"second"),  # the action ended already: ignored
            Report("r1", "c1", leased["c1"].attempt, SUCCEEDED, b"other"),
        ]
        assert await store.report(tenant, reports) == 1
        assert (await store.get_action(tenant, "r1", "c0"))[2:] == (SUCCEEDED, attempt, b"first")
        assert (await store.get_action(tenant, "r1", "c1"))[2] == SUCCEEDED
        page = await store.events(tenant, "r1", "root", "0-0", 0)
        assert [(c.name, c.phase, c.result) for _, c in page] == [
            ("c0", RUNNING, b""),
            ("c0", SUCCEEDED, b"first"),
            ("c1", SUCCEEDED, b"other"),
        ]
        assert await store.running(tenant) == 1  # the root's slot: the children gave theirs back, once each

    with_store(own_redis, body)


def test_an_action_queued_twice_is_leased_once_by_one_lease(own_redis: RedisProcess) -> None:
    """An action found twice in the queue by one lease call is taken once: the second entry sees
    the first one leased it."""

    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        await store.create_run(tenant, "r1", "root", b"spec")
        await store.lease(tenant, 10)  # the root
        await store.admit(tenant, "r1", "root", [("c0", b"spec")])
        run_queue = keys.TenantKeys(tenant).run_queue("r1")
        (entry,) = await store._redis.lrange(run_queue, 0, -1)
        await store._redis.rpush(run_queue, entry)  # the same action, queued again
        leased = await store.lease(tenant, 10)
        assert [(a.name, a.attempt) for a in leased] == [("c0", 1)]
        assert (await store.get_action(tenant, "r1", "c0"))[2:4] == (INITIALIZING, 1)  # leased, its first attempt

    with_store(own_redis, body)


def test_events_give_each_change_its_own_result_whatever_its_bytes(own_redis: RedisProcess) -> None:
    """events.lua packs a page of changes into two strings: every result must come back whole and
    in its own change, empty ones, ones holding the separators, binary and large ones alike."""
    results = {
        "c0": b"",
        "c1": b"one two\nthree four",
        "c2": bytes(range(256)) * 3,
        "c3": b"x" * 700_000,
        "c4": b"y" * 700_000,  # the two large ones take more than a page's bytes (EVENTS_PAGE_BYTES)
    }

    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        await store.create_run(tenant, "r1", "root", b"spec")
        await store.admit(tenant, "r1", "root", [(name, b"spec") for name in results])
        leased = {a.name: a for a in await store.lease(tenant, 10)}
        reports = [Report("r1", "c0", leased["c0"].attempt, RUNNING)]
        reports += [Report("r1", name, leased[name].attempt, SUCCEEDED, result) for name, result in results.items()]
        for report in reports:  # one at a time: each its own event, in this order
            assert await store.report(tenant, [report]) == 0

        changes, cursor = [], "0-0"
        while page := await store.events(tenant, "r1", "root", cursor, 0, count=3):
            assert len(page) <= 3
            changes += [child for _, child in page]
            cursor = page[-1][0]
        assert [(c.name, c.phase, c.result) for c in changes] == [(r.name, r.phase, r.result) for r in reports]

    with_store(own_redis, body)


def test_a_lease_carries_the_output_cap_of_its_tenant(own_redis: RedisProcess) -> None:
    """lease.lua reads the cap with the lease (the dispatcher tells each action how much it may return)."""

    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        await store.create_run(tenant, "r1", "root", b"spec")
        (leased,) = await store.lease(tenant, 10)
        assert leased.max_payload_bytes == Limits().max_payload_bytes  # the default

        redis = aioredis.Redis.from_url(own_redis.url)
        try:
            await LimitStore(redis, Scripts.register(redis), Limits(), clock).set(
                tenant, {"max_payload_bytes": 4096}, "admin", "test"
            )
        finally:
            await redis.aclose()
        await store.create_run(tenant, "r2", "root", b"spec")
        (leased,) = await store.lease(tenant, 10)
        assert leased.max_payload_bytes == 4096

    with_store(own_redis, body)


def test_a_lease_that_takes_a_tenants_last_work_unmarks_it_and_one_that_leaves_some_does_not(
    own_redis: RedisProcess,
) -> None:
    """Not only a lease that finds nothing: then a slot its actions free later wakes no lease
    stream for nothing (_wake_if_ready)."""

    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        redis = aioredis.Redis.from_url(own_redis.url)
        try:
            await store.create_run(tenant, "r1", "root", b"spec")
            await store.create_run(tenant, "r2", "root", b"spec")
            assert len(await store.lease(tenant, 1)) == 1
            assert await redis.sismember(keys.READY, tenant)  # r2's root still waits
            assert len(await store.lease(tenant, 10)) == 1
            assert not await redis.sismember(keys.READY, tenant)
        finally:
            await redis.aclose()

    with_store(own_redis, body)


def test_a_stores_subscription_hears_other_servers_wakes_and_not_its_own(own_redis: RedisProcess) -> None:
    """Its own wakes reached its streams when they were made (on_wake): a second one costs a lease for nothing."""

    async def body(store: ActionStore, clock: Clock, tenant: str) -> None:
        redis = aioredis.Redis.from_url(own_redis.url)
        scripts = Scripts.register(redis)
        other = ActionStore(redis, scripts, LimitStore(redis, scripts, Limits(), clock), clock=clock)
        subscribed = asyncio.Event()
        heard: list[str] = []

        async def listen() -> None:
            async for woken in store.wakes(subscribed=subscribed.set):
                heard.append(woken)

        listener = asyncio.create_task(listen())
        try:
            await asyncio.wait_for(subscribed.wait(), 5)
            await store.wake(f"{tenant}-here")
            await other.wake(f"{tenant}-there")  # published after ours: heard after ours would be
            for _ in range(500):
                if heard:
                    break
                await asyncio.sleep(0.01)
            assert heard == [f"{tenant}-there"]
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await redis.aclose()

    with_store(own_redis, body)
