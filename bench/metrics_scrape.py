"""How long a scrape of a server's /metrics takes, and how big it is, with many tenants.

    python -m bench.metrics_scrape [--tenants 1000]   # prints, writes bench/results/metrics-scrape-<UTC>.json

A private Redis holds `--tenants` tenants, each with a limit override, a run
with queued actions and a lease; the per-tenant collector (server/collector.py)
reads them at scrape time with its label cap raised to the tenant count. The
counters of the request path are in the same registry, as on a live server.
Also reported: the longest Redis command of the scrapes (SLOWLOG), which the
paged reads keep short.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from fanout.quota import keys
from fanout.quota.limits import Limits
from fanout.server import metrics
from fanout.server.collector import TenantCollector
from fanout.server.redis_process import RedisProcess

RESULTS = Path(__file__).resolve().parent / "results"
SCRAPES = 20


def fill(client: redis.Redis, tenants: int) -> None:
    """Tenants shaped like busy ones: an override, queued work in a run, a leased action."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for i in range(tenants):
        k = keys.TenantKeys(f"tenant-{i:05d}")
        pipe.sadd(keys.TENANTS, k.tenant)
        pipe.hset(k.limits, "max_fanout", 5_000)
        pipe.hset(k.stats, mapping={"queued": 120, "bytes": 40_000})
        pipe.rpush(k.runs, "r1")
        pipe.rpush(k.run_queue("r1"), *(f"a{j}/{now - j}" for j in range(100)))
        pipe.hset(k.run("r1"), "count", 4_600)
        pipe.zadd(k.leased, {"r1/root": now + 15})
        pipe.sadd(k.slots, "r1/root")
    pipe.execute()


def measure(tenants: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="fanout-metrics-bench") as tmp:
        store = RedisProcess(Path(tmp) / "redis", appendonly=False).start()
        client = redis.Redis.from_url(store.url)
        try:
            fill(client, tenants)
            metrics.cap_tenant_labels(tenants)
            collector = TenantCollector(store.url, Limits(), tenants)
            registry = CollectorRegistry()
            registry.register(collector)
            client.slowlog_reset()
            times, size = [], 0
            for _ in range(SCRAPES):
                started = time.perf_counter()
                body = generate_latest(registry) + generate_latest(REGISTRY)
                times.append(time.perf_counter() - started)
                size = len(body)
            slowest = max(client.slowlog_get(128), key=lambda entry: entry["duration"], default=None)
            collector.close()
        finally:
            client.close()
            store.stop()
    return {
        "tenants": tenants,
        "scrapes": SCRAPES,
        "scrape_ms_median": round(statistics.median(times) * 1000, 2),
        "scrape_ms_max": round(max(times) * 1000, 2),
        "body_bytes": size,
        "series": body.decode().count("\n") - body.decode().count("\n#"),
        "longest_redis_command_us": slowest["duration"] if slowest else 0,
        "longest_redis_command": slowest["command"].decode(errors="replace")[:60] if slowest else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    figures = measure(parser.parse_args().tenants)
    for name, value in figures.items():
        print(f"{name:>28}: {value}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"metrics-scrape-{stamp}.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
