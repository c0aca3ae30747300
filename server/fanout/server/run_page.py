"""The run page: one HTML file for every run, and the small JSON endpoints it polls.

  GET /runs/NAME                 the page (static; it reads NAME from its own address)
  GET /api/runs/NAME             the run: phase, counts per phase, and its newest failures
  GET /api/runs/NAME/actions     a page of its actions (phase, group, prefix, cursor, limit)
  GET /api/runs/NAME/actions/A   one action: what the page's link to an action (#action-A) shows,
                                 its report included (in a sandboxed frame: no script of it runs)

The JSON endpoints want a tenant token in the Authorization header, never in the address, so
no token lands in a URL, a history or an access log; a run of another tenant is 404 exactly
like a missing one. Each answer is a few bounded Redis reads (counters and pages), never the
whole run, so the page stays quick for a run of any size.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from fanout.quota import errors, phases
from fanout.quota.listing import Listing
from fanout.quota.reports import ReportStore
from fanout.quota.tokens import TokenStore
from fanout.server import run_views, validation
from fanout.server.status import ServiceError
from fanout.v1 import actions_pb2 as pb

# Failures the summary carries; the page reads more through /actions.
SUMMARY_FAILURES = 20
# How long an HTTP thread waits for its Redis reads on the event loop.
ANSWER_SECONDS = 10.0

Answer = tuple[int, str, bytes, dict[str, str]]
# (tenant, run, query parameters) -> what the endpoint answers, as a message or plain JSON.
Handler = Callable[[str, str, dict[str, str]], Awaitable[Message | dict[str, Any]]]
_JSON = "application/json"
_HTML_HEADERS = {
    # The page runs only its own script and talks only to this server.
    "Content-Security-Policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_HTTP_OF: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAVAILABLE: 503,
}


# What an action's details show of its output: the end of it, enough to read a failure.
PAGE_OUTPUT_BYTES = 64 << 10


def page_html() -> bytes:
    return resources.files("fanout.server").joinpath("pages/run.html").read_bytes()


class RunPage:
    def __init__(
        self,
        listing: Listing,
        tokens: TokenStore,
        links: run_views.PageLinks,
        loop: asyncio.AbstractEventLoop,
        reports: ReportStore,
    ) -> None:
        self._listing = listing
        self._reports = reports
        self._tokens = tokens
        self._links = links
        self._loop = loop
        self._html = page_html()

    def answer(self, target: str, authorization: str) -> Answer:
        """(status, content type, body, extra headers) for GET `target`; called on an HTTP thread."""
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if len(parts) == 2 and parts[0] == "runs" and parts[1]:
            return 200, "text/html; charset=utf-8", self._html, _HTML_HEADERS
        if len(parts) in (3, 4, 5) and parts[:2] == ["api", "runs"] and (len(parts) == 3 or parts[3] == "actions"):
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if len(parts) == 5:
                query["name"] = parts[4]
            handler: Handler = {3: self._summary, 4: self._actions, 5: self._action}[len(parts)]
            return self._json(handler, parts[2], query, authorization)
        return _error(404, "no such page")

    def _json(
        self,
        handler: Handler,
        run: str,
        query: dict[str, str],
        authorization: str,
    ) -> Answer:
        async def answer() -> Message | dict[str, Any]:
            tenant = await self._tenant(authorization)
            validation.run_name(run)
            return await handler(tenant, run, query)

        try:
            body = asyncio.run_coroutine_threadsafe(answer(), self._loop).result(ANSWER_SECONDS)
        except ServiceError as exc:
            return _error(_HTTP_OF.get(exc.code, 400), str(exc))
        except errors.NotFound:
            return _error(404, f"run {run!r} not found")
        except errors.InvalidArgument as exc:
            return _error(400, str(exc))
        except (errors.StoreError, TimeoutError):
            return _error(503, "the control plane cannot reach its store; try again shortly")
        if isinstance(body, Message):
            body = json_format.MessageToDict(body, preserving_proto_field_name=True)
        return 200, _JSON, json.dumps(body).encode(), {}

    async def _tenant(self, authorization: str) -> str:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, "send a tenant token: 'Authorization: Bearer <token>'")
        who = await self._tokens.resolve(token.strip())
        if who is None:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, "invalid or revoked token")
        if who.role != "tenant":
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED, f"the run page takes a tenant token, not a {who.role} one"
            )
        return who.tenant

    async def _summary(self, tenant: str, run: str, query: dict[str, str]) -> Message | dict[str, Any]:
        request = pb.ListActionsRequest(run=run, phases=[phases.FAILED, phases.TIMED_OUT], limit=SUMMARY_FAILURES)
        summary = run_views.run_message(await self._listing.run_summary(tenant, run), self._links)
        failures = await run_views.list_actions(self._listing, tenant, request)
        return {
            "run": json_format.MessageToDict(summary, preserving_proto_field_name=True),
            "failures": json_format.MessageToDict(failures, preserving_proto_field_name=True),
        }

    async def _actions(self, tenant: str, run: str, query: dict[str, str]) -> Message | dict[str, Any]:
        request = pb.ListActionsRequest(
            run=run,
            name_prefix=query.get("prefix", ""),
            group=query.get("group", ""),
            cursor=query.get("cursor", ""),
            limit=_number(query.get("limit", "0")),
        )
        for name in filter(None, query.get("phase", "").split(",")):
            if name not in pb.Phase.keys():
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"phase {name[:40]!r} is not a phase")
            request.phases.append(pb.Phase.Value(name))
        return await run_views.list_actions(self._listing, tenant, request)

    async def _action(self, tenant: str, run: str, query: dict[str, str]) -> Message | dict[str, Any]:
        validation.action_name(query["name"])
        entry = await self._listing.action(tenant, run, query["name"])
        status = run_views.action_message(run, entry)
        printed = await self._listing.output(tenant, run, entry.name, entry.attempt) if entry.attempt else None
        report = await self._reports.get(tenant, run, entry.name)
        return {
            **json_format.MessageToDict(status, preserving_proto_field_name=True),
            # The tail of what its latest attempt printed; the whole (up to 1 MiB) with `fanout logs`.
            "output": printed[-PAGE_OUTPUT_BYTES:].decode("utf-8", "replace") if printed is not None else None,
            "output_cut": printed is not None and len(printed) > PAGE_OUTPUT_BYTES,
            # Its report (fanout.report), the tenant's own HTML: the page shows it in a sandboxed frame.
            "report": report.decode("utf-8", "replace") if report is not None else None,
        }


def _number(value: str) -> int:
    if not value.isdigit() or len(value) > 6:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"limit {value[:20]!r} is not a small number")
    return int(value)


def _error(status: int, message: str) -> Answer:
    return status, _JSON, json.dumps({"error": message}).encode(), {}
