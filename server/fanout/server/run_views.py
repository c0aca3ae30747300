"""What ListRuns, ListActions and the run page answer: one place turns listings into messages.

The gRPC servicer and the HTTP run page share these, so the two views of a run agree.
"""

from __future__ import annotations

from urllib.parse import quote

from fanout.quota import keys, phases
from fanout.quota.listing import MAX_LIMIT, ActionEntry, ActionQuery, Listing, RunQuery, RunSummary
from fanout.server import validation
from fanout.server.status import invalid
from fanout.v1 import actions_pb2 as pb

DEFAULT_LIMIT = 50
MAX_GROUP = 256
# A page filtered by group may drop every action of a store page; read at most this many store pages.
GROUP_PAGES = 4


class PageLinks:
    """The run page's address; empty until the HTTP port is up (or when the server serves no page)."""

    def __init__(self, base: str = "") -> None:
        self.base = base.rstrip("/")

    def run(self, run: str) -> str:
        return f"{self.base}/runs/{quote(run)}" if self.base else ""


def run_message(summary: RunSummary, links: PageLinks) -> pb.Run:
    message = pb.Run(
        name=summary.name,
        root=summary.root,
        phase=summary.phase,
        action_count=summary.action_count,
        created_at=summary.created_at,
        url=links.run(summary.name),
    )
    for phase, count in (summary.counts or {}).items():
        if count > 0:  # a counted run holds its root at least, so its map is never empty
            message.phase_counts[phases.name(phase)] = count
    return message


def action_message(run: str, entry: ActionEntry) -> pb.ActionStatus:
    spec = pb.ActionSpec.FromString(entry.spec)
    status = pb.ActionStatus(
        run=run,
        name=entry.name,
        parent=entry.parent,
        task_name=spec.task_name,
        phase=entry.phase,
        attempt=entry.attempt,
        group=spec.group,
    )
    if phases.is_terminal(entry.phase) and entry.result:
        status.result.ParseFromString(entry.result)
    return status


def limit_of(value: int) -> int:
    if value > MAX_LIMIT:
        raise invalid(f"limit {value} is too big: at most {MAX_LIMIT} per page")
    return value or DEFAULT_LIMIT


def phase_set(values: list[int]) -> frozenset[int]:
    for value in values:
        if value not in phases.ALL:
            raise invalid(f"phase {value} is not a phase of an action")
    return frozenset(values)


def _name_prefix(value: str) -> str:
    if value and not keys.ACTION_RE.match(value):
        raise invalid(f"name prefix {value[:80]!r} is invalid: A-Z, a-z, 0-9, '_' and '-' only")
    return value


async def list_runs(
    listing: Listing, tenant: str, request: pb.ListRunsRequest, links: PageLinks
) -> pb.ListRunsResponse:
    if request.name_prefix:
        validation.run_name(request.name_prefix, "run name prefix")
    if request.created_after < 0 or request.created_before < 0:
        raise invalid("created_after and created_before are unix seconds, not negative")
    query = RunQuery(
        phase_set(list(request.phases)), request.name_prefix, request.created_after, request.created_before
    )
    runs, cursor = await listing.runs(tenant, query, limit_of(request.limit), request.cursor)
    return pb.ListRunsResponse(runs=[run_message(r, links) for r in runs], next_cursor=cursor)


async def list_actions(listing: Listing, tenant: str, request: pb.ListActionsRequest) -> pb.ListActionsResponse:
    validation.run_name(request.run)
    if len(request.group) > MAX_GROUP:
        raise invalid(f"group is {len(request.group)} characters long, at most {MAX_GROUP}")
    query = ActionQuery(phase_set(list(request.phases)), _name_prefix(request.name_prefix))
    limit, cursor = limit_of(request.limit), request.cursor
    out = pb.ListActionsResponse()
    for _ in range(GROUP_PAGES):
        entries, cursor = await listing.actions(tenant, request.run, query, limit - len(out.actions), cursor)
        for entry in entries:
            status = action_message(request.run, entry)
            if not request.group or status.group == request.group or status.group.startswith(request.group + "/"):
                out.actions.append(status)
        if not request.group or not cursor or len(out.actions) >= limit:
            break
    out.next_cursor = cursor
    return out
