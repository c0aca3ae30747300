"""The per-tenant gauges read from Redis at scrape time: limits, usage, headroom, queues, leases."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator

import pytest
import redis
from prometheus_client import CollectorRegistry

from fanout.server import metrics
from fanout.server.app import ControlPlane
from fanout.server.collector import TenantCollector, pools
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread


@pytest.fixture(autouse=True)
def every_tenant_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics.tenant_label, "cap", 10**9)


@pytest.fixture
def quiet_tenant(loop_thread: LoopThread, own_plane: ControlPlane) -> Iterator[Tenant]:
    """A tenant on a control plane with no dispatcher: what it admits stays queued."""
    t = make_tenant(loop_thread, own_plane, f"127.0.0.1:{own_plane.port}", prefix="col")
    yield t
    t.client.close()


Scrape = Callable[..., CollectorRegistry]


@pytest.fixture
def scrape() -> Iterator[Scrape]:
    """A registry holding a collector on a Redis; the collectors' connections close after the test."""
    collectors: list[TenantCollector] = []

    def make(
        redis_url: str, settings: Settings, max_tenants: int = 1000, cache_seconds: float = 0.0
    ) -> CollectorRegistry:
        collector = TenantCollector(
            redis_url, settings.limits, max_tenants, lambda: pools(collections.Counter()), cache_seconds=cache_seconds
        )
        collectors.append(collector)
        registry = CollectorRegistry()
        registry.register(collector)
        return registry

    yield make
    for collector in collectors:
        collector.close()


def test_limits_usage_headroom_and_queue_of_a_tenant(
    quiet_tenant: Tenant, own_redis: RedisProcess, own_settings: Settings, scrape: Scrape
) -> None:
    quiet_tenant.set_limits(max_fanout=10, max_queued=50)
    run = quiet_tenant.client.create_run(pb.ActionSpec(task_ref="m:x:y"))
    quiet_tenant.client.submit_batch(
        run.name, "root", [pb.ActionSpec(name=f"a{i}", task_ref="m:x:y") for i in range(8)]
    )

    registry = scrape(own_redis.url, own_settings)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"tenant": quiet_tenant.name, **labels})

    assert value("fanout_tenant_limit", limit="max_fanout") == 10
    assert value("fanout_tenant_limit", limit="max_concurrency") == own_settings.max_concurrency  # the default
    assert value("fanout_tenant_usage", limit="max_queued") == 9
    assert value("fanout_tenant_headroom", limit="max_queued") == 41
    assert value("fanout_tenant_usage", limit="max_concurrency") == 0
    assert value("fanout_queue_depth_actions") == 9
    assert value("fanout_runs_near_fanout_limit") == 1  # 9 of 10
    oldest = value("fanout_queue_oldest_age_seconds")
    assert oldest is not None and 0 <= oldest < 60
    assert value("fanout_leases_held") == 0
    assert registry.get_sample_value("fanout_redis_up") == 1
    assert registry.get_sample_value("fanout_dispatchers_connected", {"pool": "shared"}) == 0


def test_only_the_first_tenants_are_reported_and_the_total_says_so(
    loop_thread: LoopThread, own_plane: ControlPlane, own_redis: RedisProcess, own_settings: Settings, scrape: Scrape
) -> None:
    for _ in range(3):
        loop_thread.run(own_plane.actions.register_tenant(f"cap{len(loop_thread.run(own_plane.actions.tenants()))}"))
    total = len(loop_thread.run(own_plane.actions.tenants()))

    registry = scrape(own_redis.url, own_settings, max_tenants=2)

    reported = {s.labels["tenant"] for m in registry.collect() if m.name == "fanout_tenant_limit" for s in m.samples}
    assert len(reported) == 2
    assert registry.get_sample_value("fanout_tenants") == total


def test_an_unreachable_store_is_reported_not_raised(own_settings: Settings, scrape: Scrape) -> None:
    registry = scrape("redis://127.0.0.1:1/0", own_settings)
    assert registry.get_sample_value("fanout_redis_up") == 0


@pytest.mark.parametrize("cache_seconds", [0.0, 60.0])
def test_scrapes_within_the_cache_period_share_one_read_of_redis(
    quiet_tenant: Tenant,
    own_redis: RedisProcess,
    own_redis_client: redis.Redis,
    own_settings: Settings,
    scrape: Scrape,
    cache_seconds: float,
) -> None:
    quiet_tenant.set_limits(max_fanout=10)
    registry = scrape(own_redis.url, own_settings, cache_seconds=cache_seconds)
    labels = {"tenant": quiet_tenant.name, "limit": "max_fanout"}
    assert registry.get_sample_value("fanout_tenant_limit", labels) == 10
    scans = _sscan_calls(own_redis_client)

    quiet_tenant.set_limits(max_fanout=20)
    seen = registry.get_sample_value("fanout_tenant_limit", labels)

    if cache_seconds:
        assert seen == 10  # the first read, served again
        assert _sscan_calls(own_redis_client) == scans
    else:
        assert seen == 20
        assert _sscan_calls(own_redis_client) > scans


def _sscan_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_sscan", {}).get("calls", 0))


def test_dispatcher_pools_name_shared_and_byoc_dispatchers() -> None:
    assert pools(collections.Counter({"": 2, "acme": 1})) == {"shared": 2, "acme": 1}
    assert pools(collections.Counter()) == {"shared": 0}
