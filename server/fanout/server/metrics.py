"""Prometheus metrics. Names are fanout_*, units in the names, labels bounded."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ADMISSION_DECISIONS = Counter(
    "fanout_admission_decisions_total",
    "Batch admission decisions, by outcome.",
    ["decision"],  # admitted | rejected_max_fanout | rejected_max_queued | dry_run
)
FANOUT_NEAR_LIMIT = Counter(
    "fanout_fanout_near_limit_total",
    "Admitted batches that left their run within 10% of max_fanout: tenants about to hit the limit.",
)
ACTIONS_ADMITTED = Counter("fanout_actions_admitted_total", "Actions newly admitted (resubmissions not counted).")
BATCH_SIZE = Histogram(
    "fanout_batch_size_actions",
    "Actions per SubmitBatch request.",
    buckets=(1, 10, 100, 1_000, 10_000, 100_000),
)
ACTIONS_FINISHED = Counter("fanout_actions_finished_total", "Actions that reached a terminal phase.", ["phase"])
ACTIONS_LEASED = Counter("fanout_actions_leased_total", "Actions handed to dispatchers.")
DISPATCH_LATENCY = Histogram(
    "fanout_dispatch_latency_seconds",
    "From admission (or requeue) to lease by a dispatcher.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LEASES_RECLAIMED = Counter("fanout_leases_reclaimed_total", "Expired leases reclaimed, by outcome.", ["outcome"])
RPC_ERRORS = Counter("fanout_rpc_errors_total", "RPCs that ended in an error, by gRPC code.", ["code"])
REPORTS_IGNORED = Counter("fanout_reports_ignored_total", "Phase reports ignored as stale or duplicate.")
# Calls that submit children and watch streams opened, by RPC: workers multiplex their parents
# (SubmitMany, WatchMany), so these grow with workers and event-loop turns, not with parents.
SUBMIT_CALLS = Counter("fanout_submit_calls_total", "Calls that submit children, by RPC.", ["rpc"])
WATCH_STREAMS = Counter("fanout_watch_streams_opened_total", "Watch streams opened, by RPC.", ["rpc"])
WATCH_PARENTS_ADDED = Counter("fanout_watch_many_parents_added_total", "Parents added to WatchMany streams.")
