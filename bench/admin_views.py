"""What the admin's views cost with many tenants: `fanout admin quota list` (ListQuotas, paged),
`fanout admin tenant list` (ListTenants) and `fanout admin audit` over every tenant (ListAudit).

How: a private Redis and `fanout server` as a subprocess (bench/lone_server.py); TENANTS tenants are
created through the admin RPCs, each with one audited limit change. Each view is then read REPEATS
times; printed: its median wall time and the longest single Redis command it ran (SLOWLOG with a
0 µs threshold, reset before each view; it includes what the server's periodic loop ran meanwhile,
which visits every tenant). Writes bench/results/admin-views-<UTC timestamp>.json.
Figures are printed, never asserted.

    python -m bench.admin_views [--tenants 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.lone_server import lone_server
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.v1 import admin_pb2 as apb

REPEATS = 5
RESULTS = Path(__file__).resolve().parent / "results"


def _longest_us(store: redis.Redis, view: Callable[[], Any]) -> tuple[float, int, str]:
    walls = []
    store.config_set("slowlog-log-slower-than", 0)
    store.slowlog_reset()
    for _ in range(REPEATS):
        started = time.perf_counter()
        view()
        walls.append(time.perf_counter() - started)
    entries: list[dict[str, Any]] = list(store.slowlog_get(100_000))
    store.config_set("slowlog-log-slower-than", 10_000)
    empty: dict[str, Any] = {"duration": 0, "command": b""}
    longest = max(entries, key=lambda e: int(e["duration"]), default=empty)
    command = longest["command"]
    text = command.decode() if isinstance(command, bytes) else str(command)
    return statistics.median(walls), int(longest["duration"]), text[:80]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.admin_views", description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    args = parser.parse_args(argv)
    with lone_server("fanout-admin-views-") as server:
        store = redis.Redis.from_url(server.redis_url)
        with Client(ClientConfig(endpoint=server.endpoint, token=server.admin_token)) as admin:
            for i in range(args.tenants):
                name = f"bench-{i:05d}"
                admin.call(admin.admin.CreateTenant, apb.CreateTenantRequest(tenant=name))
                change = apb.SetLimitsRequest(tenant=name, limits=apb.Limits(max_queued=1000 + i), reason="bench")
                admin.call(admin.admin.SetLimits, change)

            def quota_list() -> None:
                after = ""
                while True:
                    page = admin.call(admin.admin.ListQuotas, apb.ListQuotasRequest(after=after))
                    if not page.next:
                        return
                    after = page.next

            views = {
                "ListQuotas (every page)": quota_list,
                "ListTenants": lambda: admin.call(admin.admin.ListTenants, apb.ListTenantsRequest()),
                "ListAudit (every tenant, 100)": lambda: admin.call(
                    admin.admin.ListAudit, apb.ListAuditRequest(limit=100)
                ),
            }
            rows = {}
            for name, view in views.items():
                wall, longest, command = _longest_us(store, view)
                rows[name] = {"median_s": wall, "longest_redis_command_us": longest, "longest_command": command}
                print(f"{name:<32} median {wall * 1000:8.1f} ms   longest Redis command {longest:>6} µs  ({command})")
        store.close()
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"admin-views-{stamp}.json"
    path.write_text(json.dumps({"tenants": args.tenants, "repeats": REPEATS, "views": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
