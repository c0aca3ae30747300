"""Prometheus metrics of the server. Names are fanout_*, units in the names, labels bounded.

Counted on the request path, once per batch (never once per action in a loop).
What lives in Redis (limits, usage, queues, leases) is read at scrape time by
collector.py instead; gRPC calls are counted by grpc_metrics.py.

Tenant labels: the first `max_tenants` tenants a process sees keep their
name, every later one is counted as OTHER_TENANT, so one process exports a
bounded number of series whatever the number of tenants.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Histogram

OTHER_TENANT = "other"
DEFAULT_MAX_TENANT_LABELS = 200


class TenantLabels:
    """Tenant label values, capped: the first `cap` tenants seen by name, the rest as OTHER_TENANT."""

    def __init__(self, cap: int = DEFAULT_MAX_TENANT_LABELS) -> None:
        self.cap = cap
        self._named: set[str] = set()
        self._lock = threading.Lock()  # the scrape collector runs in the metrics server's thread

    def __call__(self, tenant: str) -> str:
        if tenant in self._named:
            return tenant
        with self._lock:
            if len(self._named) < self.cap:
                self._named.add(tenant)
                return tenant
        return OTHER_TENANT


tenant_label = TenantLabels()


def cap_tenant_labels(cap: int) -> None:
    """Set the cap (the `metrics_max_tenants` setting); tenants already named keep their label."""
    tenant_label.cap = cap


# Admission ------------------------------------------------------------------

ADMISSION_DECISIONS = Counter(
    "fanout_admission_decisions_total",
    "Admission decisions (runs created and batches), by tenant and outcome.",
    ["tenant", "decision"],  # admitted | rejected_max_fanout | rejected_max_queued | dry_run
)
ACTIONS_ADMITTED = Counter(
    "fanout_actions_admitted_total", "Actions newly admitted (resubmissions not counted).", ["tenant"]
)
BATCHES_NEAR_FANOUT_LIMIT = Counter(
    "fanout_batches_near_fanout_limit_total",
    "Admitted batches that left their run within 10% of max_fanout: tenants about to hit the limit.",
    ["tenant"],
)
BATCH_SIZE = Histogram(
    "fanout_batch_size_actions",
    "Actions per SubmitBatch request.",
    buckets=(1, 10, 100, 1_000, 10_000, 100_000),
)

# Dispatch -------------------------------------------------------------------

ACTIONS_LEASED = Counter("fanout_actions_leased_total", "Actions handed to dispatchers.")
DISPATCH_LATENCY = Histogram(
    "fanout_dispatch_latency_seconds",
    "From admission (or requeue) to lease by a dispatcher.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ACTIONS_FINISHED = Counter("fanout_actions_finished_total", "Actions that reached a terminal phase.", ["phase"])
RETRIES = Counter("fanout_retries_total", "Failed actions queued again for one of their retries.", ["tenant"])
REPORTS_IGNORED = Counter("fanout_reports_ignored_total", "Phase reports ignored as stale or duplicate.")
LEASES_RECLAIMED = Counter(
    "fanout_leases_reclaimed_total",
    "Expired leases reclaimed, by outcome (requeued, or failed after max_attempts lost leases).",
    ["outcome"],
)
for _outcome in ("requeued", "failed"):
    LEASES_RECLAIMED.labels(outcome=_outcome)  # exported at 0 before the first reclaim, so rates have series

# Errors and Redis -------------------------------------------------------------

RPC_ERRORS = Counter("fanout_rpc_errors_total", "RPCs that ended in an error, by gRPC code.", ["code"])
REDIS_ERRORS = Counter(
    "fanout_redis_errors_total",
    "Redis calls that failed (unreachable, timed out, or an error reply), by where they were made.",
    ["source"],  # script | collector
)
for _source in ("script", "collector"):
    REDIS_ERRORS.labels(source=_source)
REDIS_SCRIPT_DURATION = Histogram(
    "fanout_redis_script_duration_seconds",
    "Round trip of one Lua script call, seen from the server, by script.",
    ["script"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
# Calls that submit children and watch streams opened, by RPC: workers multiplex their parents
# (SubmitMany, WatchMany), so these grow with workers and event-loop turns, not with parents.
SUBMIT_CALLS = Counter("fanout_submit_calls_total", "Calls that submit children, by RPC.", ["rpc"])
WATCH_STREAMS = Counter("fanout_watch_streams_opened_total", "Watch streams opened, by RPC.", ["rpc"])
WATCH_PARENTS_ADDED = Counter("fanout_watch_many_parents_added_total", "Parents added to WatchMany streams.")
