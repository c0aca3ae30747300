"""Gauges read from Redis at scrape time: per tenant limits, usage, headroom, queues and leases.

Prometheus' scrape runs collect() in the metrics server's thread, so the event
loop never waits on it; it has its own small synchronous Redis client. Redis
never waits on it either: tenants are walked with SSCAN (never KEYS or
SMEMBERS), a page at a time, and each page is one pipeline of O(1) or
O(log n) reads, with at most RUN_PEEK runs looked at per tenant. Only the
first `max_tenants` tenants are reported; `fanout_tenants` tells how many
there are in all, so a capped report shows.

Every server serves these gauges, and Prometheus usually runs as a pair: a
read is kept for `cache_seconds`, so scrapes that come together (two
Prometheus servers, a curl while debugging) cost Redis one walk, not one each.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fanout.quota import keys
from fanout.quota.limits import Limits
from fanout.server import metrics, redis_connect

log = logging.getLogger(__name__)

# Tenants read per pipeline: one round trip each, every command in it short.
TENANT_PAGE = 100
# Runs waiting to be leased looked at per tenant (the head of its round robin): enough
# to see the oldest queued action and the runs about to hit max_fanout, bounded.
RUN_PEEK = 5
# A run holding this share of max_fanout is "near" its limit (as BATCHES_NEAR_FANOUT_LIMIT).
NEAR_FANOUT_SHARE = 0.9
# A scrape must not hang on a Redis that stopped answering.
REDIS_TIMEOUT_SECONDS = 2.0
# Limits with a usage Redis keeps per tenant, and the stat that holds it.
USAGE_LIMITS = ("max_concurrency", "max_queued", "max_stored_bytes")


class TenantCollector(Collector):
    def __init__(
        self,
        redis_url: str,
        defaults: Limits,
        max_tenants: int,
        dispatcher_pools: Callable[[], dict[str, int]] | None = None,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = 0.0,
    ) -> None:
        self._redis: Any = redis_connect.connect_sync(redis_url, REDIS_TIMEOUT_SECONDS)
        self._defaults = asdict(defaults)
        self._max_tenants = max_tenants
        self._dispatcher_pools = dispatcher_pools
        self._clock = clock
        self._cache_seconds = cache_seconds
        # The last read of the state store: (when, per-tenant families, redis up); one read at a time.
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GaugeMetricFamily], int] | None = None

    def close(self) -> None:
        self._redis.close()

    def describe(self) -> list[Any]:
        return []  # collected only when scraped, never at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        tenant_families, up = self._tenant_families()
        yield from tenant_families
        dispatchers = GaugeMetricFamily(
            "fanout_dispatchers_connected",
            "Dispatchers with an open lease stream to this server, by pool: shared, or the tenant a BYOC one serves.",
            labels=["pool"],
        )
        if self._dispatcher_pools is not None:  # this server's own streams: always read now, never cached
            for pool, count in self._dispatcher_pools().items():
                dispatchers.add_metric([pool], count)
        yield dispatchers
        yield GaugeMetricFamily("fanout_redis_up", "1 if the last scrape could read the state store, else 0.", up)
        yield GaugeMetricFamily(
            "fanout_collector_duration_seconds",
            "How long this scrape took to read the per-tenant gauges from Redis (near 0 when served from cache).",
            time.perf_counter() - started,
        )

    def _tenant_families(self) -> tuple[list[GaugeMetricFamily], int]:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._cache_seconds:
                return self._cached[1], self._cached[2]
            families = _Families()
            up = 1
            try:
                self._read(families)
            except redis.RedisError as exc:
                up = 0
                metrics.REDIS_ERRORS.labels(source="collector").inc()
                log.warning("metrics could not read the state store: %s", exc)
            read = list(families.all())
            self._cached = (now, read, up) if up else None  # a failed read is tried again at the next scrape
            return read, up

    def _read(self, families: _Families) -> None:
        families.tenants.add_metric([], int(self._redis.scard(keys.TENANTS)))
        cursor, seen = 0, set[str]()
        while len(seen) < self._max_tenants:
            cursor, page = self._redis.sscan(keys.TENANTS, cursor, count=TENANT_PAGE)
            # SSCAN may return a member twice (while the set is rehashed): report each tenant once.
            tenants = sorted({t.decode() for t in page} - seen)[: self._max_tenants - len(seen)]
            if tenants:
                self._read_page(tenants, families)
                seen.update(tenants)
            if cursor == 0:
                break

    def _read_page(self, tenants: list[str], families: _Families) -> None:
        now = self._clock()
        pipe = self._redis.pipeline(transaction=False)
        for tenant in tenants:
            k = keys.TenantKeys(tenant)
            pipe.hgetall(k.limits)
            pipe.hmget(k.stats, "queued", "bytes")
            pipe.scard(k.slots)
            pipe.zcard(k.leased)
            pipe.zcount(k.leased, "-inf", now)
            pipe.zcard(k.delayed)
            pipe.lindex(k.queue, 0)
            pipe.lrange(k.runs, 0, RUN_PEEK - 1)
        replies = pipe.execute()
        rows = [replies[i : i + 8] for i in range(0, len(replies), 8)]

        # Second round trip: the head of each peeked run's queue and how many actions the run holds.
        pipe = self._redis.pipeline(transaction=False)
        for tenant, row in zip(tenants, rows, strict=True):
            k = keys.TenantKeys(tenant)
            for run in row[7]:
                pipe.lindex(k.run_queue(run.decode()), 0)
                pipe.hget(k.run(run.decode()), "count")
        peeks = iter(pipe.execute())

        for tenant, (overrides, stats, running, leased, expired, delayed, requeued_head, runs) in zip(
            tenants, rows, strict=True
        ):
            peeked = [(next(peeks), next(peeks)) for _ in runs]  # (queue head, actions held) per run
            label = [metrics.tenant_label(tenant)]
            if label[0] == metrics.OTHER_TENANT:
                continue  # past the label cap: one "other" series per family would mix several tenants
            limits = {**self._defaults, **{k.decode(): int(v) for k, v in overrides.items()}}
            unfinished, stored = (int(v or 0) for v in stats)
            usage = {"max_concurrency": int(running), "max_queued": unfinished, "max_stored_bytes": max(0, stored)}
            for name, value in limits.items():
                families.limit.add_metric([*label, name], value)
                if name in usage:
                    families.usage.add_metric([*label, name], usage[name])
                    families.headroom.add_metric([*label, name], max(0, value - usage[name]))
            waiting = max(0, unfinished - int(leased) - int(delayed))
            families.queue_depth.add_metric(label, waiting)
            families.leases_held.add_metric(label, int(leased))
            families.leases_expired.add_metric(label, int(expired))
            families.retries_delayed.add_metric(label, int(delayed))
            near = sum(int(count or 0) >= NEAR_FANOUT_SHARE * limits["max_fanout"] for _, count in peeked)
            families.runs_near_limit.add_metric(label, near)
            heads = [requeued_head, *(head for head, _ in peeked)]
            oldest = min((_admitted_at(h) for h in heads if h), default=None)
            families.oldest_age.add_metric(label, max(0.0, now - oldest) if oldest is not None else 0.0)


def _admitted_at(entry: bytes) -> float:
    """Queue entries end in "/<admitted at>" (keys.py: the run queue and the tenant's requeue list)."""
    try:
        return float(entry.rsplit(b"/", 1)[1])
    except (IndexError, ValueError):
        return time.time()  # not a queue entry we know: count it as fresh rather than fail the scrape


class _Families:
    """The gauge families of one scrape."""

    def __init__(self) -> None:
        tenant = ["tenant"]
        self.tenants = GaugeMetricFamily("fanout_tenants", "Tenants registered in the state store.", labels=[])
        self.limit = GaugeMetricFamily(
            "fanout_tenant_limit",
            "A tenant's effective limit (override or default), by limit.",
            labels=[*tenant, "limit"],
        )
        self.usage = GaugeMetricFamily(
            "fanout_tenant_usage",
            "What a tenant uses of a limit: running actions, admitted unfinished actions, stored bytes.",
            labels=[*tenant, "limit"],
        )
        self.headroom = GaugeMetricFamily(
            "fanout_tenant_headroom", "Limit minus usage, by tenant and limit.", labels=[*tenant, "limit"]
        )
        self.queue_depth = GaugeMetricFamily(
            "fanout_queue_depth_actions",
            "Admitted actions of a tenant waiting for a lease (unfinished, not leased, not waiting for a retry).",
            labels=tenant,
        )
        self.oldest_age = GaugeMetricFamily(
            "fanout_queue_oldest_age_seconds",
            f"Age of the oldest action waiting for a lease, among the requeued and the first {RUN_PEEK} runs' queues.",
            labels=tenant,
        )
        self.leases_held = GaugeMetricFamily("fanout_leases_held", "Leases dispatchers hold now.", labels=tenant)
        self.leases_expired = GaugeMetricFamily(
            "fanout_leases_expired", "Leases past their expiry, not yet reclaimed.", labels=tenant
        )
        self.retries_delayed = GaugeMetricFamily(
            "fanout_retries_delayed_actions", "Failed actions waiting for their retry to fall due.", labels=tenant
        )
        self.runs_near_limit = GaugeMetricFamily(
            "fanout_runs_near_fanout_limit",
            f"Runs holding {NEAR_FANOUT_SHARE:.0%} of max_fanout or more, among the first {RUN_PEEK} with queued work.",
            labels=tenant,
        )

    def all(self) -> Iterator[GaugeMetricFamily]:
        yield from (
            self.tenants,
            self.limit,
            self.usage,
            self.headroom,
            self.queue_depth,
            self.oldest_age,
            self.leases_held,
            self.leases_expired,
            self.retries_delayed,
            self.runs_near_limit,
        )


def pools(scopes: collections.Counter[str]) -> dict[str, int]:
    """Lease streams by scope as pool labels: "shared", or the (capped) tenant a scoped dispatcher serves."""
    out: dict[str, int] = collections.defaultdict(int)
    for scope, count in scopes.items():
        out[metrics.tenant_label(scope) if scope else "shared"] += count
    out.setdefault("shared", 0)
    return dict(out)
