"""Finished runs are dropped by a sweeper after their tenant's retention, in short steps.

Against a real Redis of this module's own (the session's dispatcher would
lease these actions) with the clock in the test's hands.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from fanout.cli.main import main
from fanout.client import Client
from fanout.quota.actions import ActionStore, Report
from fanout.quota.limits import Limits, LimitStore
from fanout.quota.phases import SUCCEEDED
from fanout.quota.scripts import Scripts
from fanout.server.redis_process import RedisProcess
from tests.conftest import Tenant
from tests.helpers import Clock

SCRIPT_BOUND_US = 50_000


def run_keys(client: redis.Redis, tenant: str, run: str) -> list[bytes]:
    return list(client.scan_iter(match=f"fo:{{{tenant}}}:*{run}*", count=10_000))


def test_a_finished_run_is_dropped_after_the_tenants_retention_in_short_steps(own_redis: RedisProcess) -> None:
    sync = redis.Redis.from_url(own_redis.url)
    tenant = "ret-1"

    async def main() -> None:
        client = aioredis.Redis.from_url(own_redis.url)
        clock = Clock()
        scripts = Scripts.register(client)
        limits = LimitStore(client, scripts, Limits(max_fanout=10_000), clock)
        store = ActionStore(client, scripts, limits, clock=clock)
        try:
            await limits.set(tenant, {"retention_seconds": 100}, actor="test", reason="test")
            await store.create_run(tenant, "big", "root", b"root spec")
            (root,) = await store.lease(tenant, 1)
            await store.admit(tenant, "big", "root", [(f"c{i}", b"spec") for i in range(1000)])
            # 600 children with a child of their own: 602 parents, each with a kids list and an event stream.
            for i in range(600):
                await store.admit(tenant, "big", f"c{i}", [(f"g{i}", b"spec")])
            await store.report(tenant, [Report("big", "root", root.attempt, SUCCEEDED, b"x" * 1000)])
            while await store.close_finished_runs(tenant) == 0:
                pass
            assert await store.queued(tenant) == 0
            assert await store.stored_bytes(tenant) > 1000  # the root's result and the aborted ones

            clock.now += 99
            assert await store.drop_expired_runs(tenant) == 0  # kept for its retention
            assert run_keys(sync, tenant, "big")
            clock.now += 2
            sync.config_set("slowlog-log-slower-than", SCRIPT_BOUND_US)
            sync.slowlog_reset()
            assert await store.drop_expired_runs(tenant) == 1
            assert await store.stored_bytes(tenant) == 0
        finally:
            await client.aclose()

    try:
        asyncio.run(main())
        assert run_keys(sync, tenant, "big") == []
        entries: list[dict[str, Any]] = sync.slowlog_get(1000)
        slow = [e for e in entries if bytes(e["command"]).upper().startswith(b"EVAL")]
        assert slow == []
    finally:
        sync.close()


def test_lowering_the_retention_applies_to_runs_already_finished(own_redis: RedisProcess) -> None:
    tenant = "ret-2"

    async def main() -> None:
        client = aioredis.Redis.from_url(own_redis.url)
        clock = Clock()
        scripts = Scripts.register(client)
        limits = LimitStore(client, scripts, Limits(), clock)
        store = ActionStore(client, scripts, limits, clock=clock)
        try:
            await store.create_run(tenant, "r1", "root", b"")
            (root,) = await store.lease(tenant, 1)
            await store.report(tenant, [Report("r1", "root", root.attempt, SUCCEEDED, b"")])
            clock.now += 3600
            assert await store.drop_expired_runs(tenant) == 0  # the default keeps it a week
            await limits.set(tenant, {"retention_seconds": 60}, actor="test", reason="disk")
            assert await store.drop_expired_runs(tenant) == 1
            assert not await store.exists(tenant, "r1")
        finally:
            await client.aclose()

    asyncio.run(main())


def test_an_admin_sets_stored_bytes_and_retention_from_the_cli_and_the_tenant_sees_them(
    admin_client: Client,
    tenant: Tenant,
    endpoint: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FANOUT_TOKEN", admin_client.config.token)
    base = ["--endpoint", endpoint]
    new_limits = ["--max-stored-bytes", "5000000", "--retention-seconds", "3600"]
    code = main(["admin", "quota", "set", tenant.name, *new_limits, "--reason", "disk", "--json", *base])
    assert code == 0, capsys.readouterr().err
    limits = admin_client.get_limits(tenant.name)
    assert (limits.limits.max_stored_bytes, limits.limits.retention_seconds) == (5_000_000, 3600)
    assert {(e.limit, e.new_value) for e in admin_client.audit(tenant.name)} == {
        ("max_stored_bytes", 5_000_000),
        ("retention_seconds", 3600),
    }
    quota = tenant.client.get_quota()
    assert (quota.max_stored_bytes, quota.retention_seconds) == (5_000_000, 3600)

    capsys.readouterr()
    code = main(["admin", "quota", "set", tenant.name, "--retention-seconds", "999999999", "--reason", "oops", *base])
    assert code == 1
    assert "retention_seconds must be between 1 and" in capsys.readouterr().err
    assert admin_client.get_limits(tenant.name).limits.retention_seconds == 3600
