"""Bearer-token authentication and error translation for every RPC.

The interceptor wraps each fanout.v1 handler: it resolves the caller's token
to a Principal (stored in a context variable for the servicer), checks the
method's allowed roles, and turns expected errors into statuses once.
Health and reflection stay open so probes and grpcurl work without a token.

Request bodies are parsed here, after the token check, not by gRPC before
it: a body that does not parse is then INVALID_ARGUMENT for a caller with a
valid token and UNAUTHENTICATED for anyone else, never UNKNOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from fanout.quota.errors import StoreError
from fanout.quota.tokens import Principal, TokenStore
from fanout.server import metrics
from fanout.server.status import ServiceError, denied, invalid, not_found, to_status

log = logging.getLogger(__name__)

PRINCIPAL: ContextVar[Principal] = ContextVar("fanout_principal")

_ACTIONS = "/fanout.v1.ActionService/"
_DISPATCH = "/fanout.v1.DispatchService/"
_ADMIN = "/fanout.v1.AdminService/"
_BUNDLES = "/fanout.v1.BundleService/"

METHOD_ROLES: dict[str, frozenset[str]] = {
    _ACTIONS + "CreateRun": frozenset({"tenant"}),
    _ACTIONS + "SubmitBatch": frozenset({"tenant", "action"}),
    _ACTIONS + "WatchChildren": frozenset({"tenant", "action"}),
    _ACTIONS + "GetRun": frozenset({"tenant", "action"}),
    _ACTIONS + "GetAction": frozenset({"tenant", "action"}),
    _ACTIONS + "AbortRun": frozenset({"tenant"}),
    # An action token aborts only its own children (the SDK, when the await of a child is cancelled).
    _ACTIONS + "AbortAction": frozenset({"tenant", "action"}),
    _ACTIONS + "GetQuota": frozenset({"tenant"}),
    _ACTIONS + "GetLogs": frozenset({"tenant", "action"}),
    # The SDK uploads a run's code; the runtime fetches it with the action's token.
    _BUNDLES + "HasBundle": frozenset({"tenant"}),
    _BUNDLES + "UploadBundle": frozenset({"tenant"}),
    _BUNDLES + "GetBundle": frozenset({"tenant", "action"}),
    _ACTIONS + "ListRuns": frozenset({"tenant"}),
    _ACTIONS + "ListActions": frozenset({"tenant", "action"}),
    # Traced calls: an action records its own (its token names it); it and its tenant read them.
    _ACTIONS + "RecordTraces": frozenset({"action"}),
    _ACTIONS + "ListTraces": frozenset({"tenant", "action"}),
    # Reports: an action puts its own; it and its tenant read them.
    _ACTIONS + "PutReport": frozenset({"action"}),
    _ACTIONS + "GetReport": frozenset({"tenant", "action"}),
    _DISPATCH + "Lease": frozenset({"dispatcher"}),
    _DISPATCH + "Report": frozenset({"dispatcher"}),
}
# Methods whose messages carry the tokens, one per parent (a worker's SubmitMany sections and
# WatchMany adds, see actions.proto): the call needs none, and each message is checked by
# authorize() in the servicer. A worker holds no token of its own, and one parent's token
# ending must not end the call the other parents share.
PER_MESSAGE_TOKENS = frozenset({_ACTIONS + "SubmitMany", _ACTIONS + "WatchMany"})
_ADMIN_METHODS = (
    "CreateTenant", "CreateToken", "RevokeToken", "RotateToken", "ListTokens", "SetLimits", "GetLimits",
    "ListAudit", "ListTenants", "GetTenant", "DeleteTenant", "ListQuotas", "ListLimitRequests",
    "ApproveLimitRequest", "DenyLimitRequest", "SetPlacement",
)  # fmt: skip
for _method in _ADMIN_METHODS:
    METHOD_ROLES[_ADMIN + _method] = frozenset({"admin"})
_QUOTA = "/fanout.v1.QuotaService/"
for _method in ("RequestLimit", "ListMyLimitRequests", "CheckFanout"):
    METHOD_ROLES[_QUOTA + _method] = frozenset({"tenant"})

# A refused streaming call first reads what the client already sent, for at
# most this long: ending the call while the client is still writing makes
# grpc's asyncio client report its failed write (INTERNAL "Internal error
# from Core") instead of the status the server sent.
REFUSAL_DRAIN_SECONDS = 0.5
REFUSAL_DRAIN_IDLE_SECONDS = 0.05
REFUSAL_DRAIN_MESSAGES = 1024
# An open stream re-resolves its token this often (one Redis read), so a
# revoked token, or an action token whose attempt ended, ends its streams.
RECHECK_SECONDS = 1.0

Guard = Callable[[aio.ServicerContext[Any, Any]], Awaitable[tuple[str, Principal] | None]]
Deserializer = Callable[[bytes], Any] | None


def principal() -> Principal:
    return PRINCIPAL.get()


async def authorize(tokens: TokenStore, token: str, roles: frozenset[str]) -> Principal:
    """The principal of `token`, if it may act in one of `roles`; else UNAUTHENTICATED or PERMISSION_DENIED."""
    if not token:
        raise ServiceError(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing bearer token: send 'authorization: Bearer <token>' (FANOUT_TOKEN)",
        )
    who = await tokens.resolve(token)
    if who is None:
        raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, "invalid or revoked token")
    if who.role not in roles:
        raise ServiceError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"a {who.role} token may not call this method (allowed: {', '.join(sorted(roles))})",
        )
    return who


async def _tokens_in_messages(context: aio.ServicerContext[Any, Any]) -> None:
    return None


class AuthInterceptor(aio.ServerInterceptor):
    def __init__(self, tokens: TokenStore) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None:
            return handler
        if method in PER_MESSAGE_TOKENS:
            return _wrap(handler, _tokens_in_messages, self._tokens, method)
        roles = METHOD_ROLES.get(method)
        if roles is None:
            if method.startswith("/fanout."):
                raise RuntimeError(f"{method} has no entry in METHOD_ROLES")
            return handler
        return _wrap(handler, self._guard(roles), self._tokens, method)

    def _guard(self, roles: frozenset[str]) -> Guard:
        async def guard(context: aio.ServicerContext[Any, Any]) -> tuple[str, Principal]:
            token = _bearer(context)
            who = await authorize(self._tokens, token, roles)
            PRINCIPAL.set(who)
            return token, who

        return guard


def _bearer(context: aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


async def _fail(context: aio.ServicerContext[Any, Any], exc: Exception) -> None:
    status = to_status(exc)
    if status is None:
        metrics.RPC_ERRORS.labels(code="INTERNAL").inc()
        log.exception("unexpected error in %s", type(exc).__name__)
        raise exc
    metrics.RPC_ERRORS.labels(code=status.code.name).inc()
    await context.abort(status.code, status.details, status.trailing_metadata)


class _RateLimitedLog:
    """One line per interval at most, counting what it left out: a flood must not fill the disk."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self._interval
        if self._suppressed:
            message += f" ({self._suppressed} more like it not logged)"
            self._suppressed = 0
        log.warning(message, *args)


_unparsable_log = _RateLimitedLog(interval=10.0)


def _parse(deserializer: Deserializer, raw: bytes, method: str) -> Any:
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except DecodeError as exc:
        _unparsable_log.warning("unparsable request to %s: %s", method, exc)
        raise invalid(f"the request body does not parse: {exc}") from None


async def _parse_stream(deserializer: Deserializer, raw: AsyncIterator[bytes], method: str) -> AsyncIterator[Any]:
    async for message in raw:
        yield _parse(deserializer, message, method)


async def _drain(requests: AsyncIterator[bytes]) -> None:
    """Read what a refused client is still sending, briefly, so it sees our status and not a failed write."""
    deadline = time.monotonic() + REFUSAL_DRAIN_SECONDS
    for _ in range(REFUSAL_DRAIN_MESSAGES):
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            await asyncio.wait_for(anext(requests), min(left, REFUSAL_DRAIN_IDLE_SECONDS))
        except (StopAsyncIteration, TimeoutError):
            return


class _Watchdog:
    """Re-resolves an open stream's token beside it and cancels the stream's step when it stops resolving.

    It cancels the handler only while it waits inside the servicer (`busy`);
    while gRPC sends a message the handler checks `revoked` itself next.
    """

    def __init__(self, tokens: TokenStore, token: str, who: Principal) -> None:
        self.busy = False
        self.revoked = False
        self._tokens = tokens
        self._token = token
        self._who = who
        self._handler = asyncio.current_task()
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            try:
                who = await self._tokens.resolve(self._token)
            except StoreError:
                continue  # Redis unreachable: the stream's own calls fail closed; ask again later
            if who != self._who:
                self.revoked = True
                if self.busy and self._handler is not None:
                    self._handler.cancel()
                return

    def stop(self) -> None:
        self._task.cancel()


def _revoked() -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, "the token was revoked or has expired; the stream ends")


async def _watched(items: AsyncGenerator[Any, None], watchdog: _Watchdog) -> AsyncGenerator[Any, None]:
    """The servicer's stream, ended UNAUTHENTICATED as soon as the watchdog finds its token gone."""
    try:
        while True:
            watchdog.busy = True
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not watchdog.revoked or task is None:
                    raise
                task.uncancel()  # the watchdog's cancel, not the client's: answer with a status
                raise _revoked() from None
            finally:
                watchdog.busy = False
            yield item
            if watchdog.revoked:
                raise _revoked()
    finally:
        watchdog.stop()
        await items.aclose()


def _wrap(handler: grpc.RpcMethodHandler, guard: Guard, tokens: TokenStore, method: str) -> grpc.RpcMethodHandler:
    """Same handler kind, behaviour wrapped with the guard, parsing and error translation.

    gRPC hands the wrapper raw bytes (no request deserializer): parsing
    happens after the guard, so its failure gets a status like any other.
    """
    parse = handler.request_deserializer
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(raw: bytes, context: aio.ServicerContext[Any, Any]) -> Any:
            try:
                await guard(context)
                return await inner_uu(_parse(parse, raw, method), context)
            except aio.AbortError:
                raise
            except Exception as exc:
                await _fail(context, exc)

        return grpc.unary_unary_rpc_method_handler(unary_unary, None, handler.response_serializer)

    def streaming(
        inner: Callable[..., AsyncGenerator[Any, None]], request_stream: bool
    ) -> Callable[..., AsyncIterator[Any]]:
        async def behaviour(raw: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            try:
                try:
                    caller = await guard(context)
                except Exception:
                    if request_stream:
                        await _drain(raw)
                    raise
                request = _parse_stream(parse, raw, method) if request_stream else _parse(parse, raw, method)
                stream = inner(request, context)
                if caller is not None:  # tokens in messages: the servicer rechecks each one itself
                    stream = _watched(stream, _Watchdog(tokens, *caller))
                async with contextlib.aclosing(stream) as items:
                    async for item in items:
                        yield item
            except aio.AbortError:
                raise
            except Exception as exc:
                await _fail(context, exc)

        return behaviour

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            streaming(handler.unary_stream, request_stream=False), None, handler.response_serializer
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            streaming(handler.stream_stream, request_stream=True), None, handler.response_serializer
        )
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def stream_unary(raw: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]) -> Any:
            try:
                try:
                    await guard(context)
                except Exception:
                    await _drain(raw)
                    raise
                return await inner_su(_parse_stream(parse, raw, method), context)
            except aio.AbortError:
                raise
            except Exception as exc:
                await _fail(context, exc)

        return grpc.stream_unary_rpc_method_handler(stream_unary, None, handler.response_serializer)
    raise RuntimeError(f"{method}: a handler of no known kind")


def check_action_scope(who: Principal, run: str, parent: str | None) -> None:
    """An action token reaches its own run only, and submits (or, on WatchMany, watches) only its own children."""
    if who.role != "action":
        return
    if run != who.run:
        raise not_found(f"run {run!r} not found")
    if parent is not None and parent != who.action:
        raise denied(f"action {who.action!r} may submit and watch only its own children, not those of {parent!r}")
