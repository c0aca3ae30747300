"""Prometheus metrics of a dispatcher: what only the place that runs actions can see.

Served on the dispatcher's own /metrics (`fanout dispatcher --metrics-port`);
the server's metrics say what was leased, these say how running it went.
"""

from __future__ import annotations

import functools
import time

from prometheus_client import Counter, Histogram

from fanout.dispatch.backend import Outcome
from fanout.server.histograms import Batched
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb

ADMISSION_TO_RUNNING = Histogram(
    "fanout_admission_to_running_seconds",
    "From an action's admission (or requeue) to its start in a worker or container.",
    ["backend"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
ACTION_DURATION = Histogram(
    "fanout_action_duration_seconds",
    "From launch to outcome of one action, by backend and terminal phase.",
    ["backend", "phase"],
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 30, 120, 600, 3600),
)
LAUNCH_ERRORS = Counter(
    "fanout_backend_launch_errors_total",
    "Actions whose worker or container could not be started, or whose backend failed, by backend.",
    ["backend"],
)
OOM_KILLS = Counter(
    "fanout_backend_oom_kills_total",
    "Actions that ran out of memory (MemoryError, or a process killed by SIGKILL as the OOM killer does), by backend.",
    ["backend"],
)

# The backends this dispatcher has, exported at 0 before their first error so rates and alerts have series.
for _backend in ("process", "pool"):
    LAUNCH_ERRORS.labels(_backend)
    OOM_KILLS.labels(_backend)

# Error types the backends and the pool report when an action never got to run.
_LAUNCH_ERRORS = frozenset({"LaunchError", "WorkerStartError", "BackendError"})
_PHASES = {value: name for name, value in pb.Phase.items()}


def backend_name(backend: object, pooled: bool) -> str:
    """'pool' for reusable workers, else the backend class without 'Backend': 'process', 'docker'..."""
    return "pool" if pooled else type(backend).__name__.removesuffix("Backend").lower()


# Both histograms are observed for every action: their labelled children are looked up once
# (labels() takes a lock and builds a key each call), and a turn's values are observed together.
@functools.cache
def _admission_to_running(backend: str) -> Batched:
    return Batched(ADMISSION_TO_RUNNING.labels(backend))


@functools.cache
def _duration(backend: str, phase: int) -> Batched:
    return Batched(ACTION_DURATION.labels(backend, _PHASES.get(phase, "UNKNOWN")))


def started(action: dpb.LeasedAction, backend: str) -> None:
    if action.admitted_at:
        _admission_to_running(backend).add(max(0.0, time.time() - action.admitted_at))


def finished(outcome: Outcome, backend: str, seconds: float) -> None:
    _duration(backend, outcome.phase).add(seconds)
    if outcome.phase == pb.SUCCEEDED:
        return  # neither a launch error nor an OOM kill
    error = outcome.result.error
    if error.type in _LAUNCH_ERRORS:
        LAUNCH_ERRORS.labels(backend).inc()
    elif error.type == "MemoryError" or error.type == "OOMKilled" or "killed by signal 9" in error.message:
        OOM_KILLS.labels(backend).inc()
