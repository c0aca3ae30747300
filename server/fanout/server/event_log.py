"""The control plane's significant events, one log line each, with tenant, run and action as fields.

With `--log-format json` (or FANOUT_LOG_FORMAT=json) the fields become JSON keys
(fanout.cli.logs), so a log pipeline finds every event of one run or tenant
without parsing messages. One function per event keeps the wording and the
fields the same wherever the event happens. Nothing here ever logs a token, a
spec or a result: names, counts and error types only.
"""

from __future__ import annotations

import logging

from fanout.quota.errors import QuotaExceeded

log = logging.getLogger("fanout.events")


def _fields(tenant: str, run: str = "", action: str = "") -> dict[str, str]:
    fields = {"tenant": tenant}
    if run:
        fields["run"] = run
    if action:
        fields["action"] = action
    return fields


def run_created(tenant: str, run: str, root: str, task: str) -> None:
    log.info("run %s created (root %s, task %s)", run, root, task, extra=_fields(tenant, run, root))


def batch_admitted(tenant: str, run: str, parent: str, admitted: int, already_present: int) -> None:
    # Debug: a big fanout admits many batches a second; the metrics count them at every level.
    log.debug(
        "%d children of %s admitted (%d already present)",
        admitted,
        parent,
        already_present,
        extra=_fields(tenant, run, parent),
    )


def batch_refused(tenant: str, run: str, parent: str, exc: QuotaExceeded) -> None:
    log.info("a batch of %s was refused: %s", parent, exc, extra=_fields(tenant, run, parent))


def run_aborted(tenant: str, run: str, aborted: int, reason: str) -> None:
    log.info("run %s aborted (%d actions): %s", run, aborted, reason[:200], extra=_fields(tenant, run))


def action_failed(tenant: str, run: str, action: str, attempt: int, phase: str, error_type: str) -> None:
    log.info(
        "action %s attempt %d ended %s (%s)",
        action,
        attempt,
        phase,
        error_type or "no error type",
        extra=_fields(tenant, run, action),
    )


def leases_reclaimed(tenant: str, requeued: int, failed: int) -> None:
    log.warning("reclaimed expired leases: %d requeued, %d failed", requeued, failed, extra=_fields(tenant))
