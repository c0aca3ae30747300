"""Bearer-token authentication and error translation for every RPC.

The interceptor wraps each fanout.v1 handler: it resolves the caller's token
to a Principal (stored in a context variable for the servicer), checks the
method's allowed roles, and turns expected errors into statuses once.
Health and reflection stay open so probes and grpcurl work without a token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from grpc import aio

from fanout.quota.tokens import Principal, TokenStore
from fanout.server import metrics
from fanout.server.status import ServiceError, to_status

log = logging.getLogger(__name__)

PRINCIPAL: ContextVar[Principal] = ContextVar("fanout_principal")

_ACTIONS = "/fanout.v1.ActionService/"
_DISPATCH = "/fanout.v1.DispatchService/"
_ADMIN = "/fanout.v1.AdminService/"

METHOD_ROLES: dict[str, frozenset[str]] = {
    _ACTIONS + "CreateRun": frozenset({"tenant"}),
    _ACTIONS + "SubmitBatch": frozenset({"tenant", "action"}),
    _ACTIONS + "WatchChildren": frozenset({"tenant", "action"}),
    _ACTIONS + "GetRun": frozenset({"tenant", "action"}),
    _ACTIONS + "GetAction": frozenset({"tenant", "action"}),
    _ACTIONS + "AbortRun": frozenset({"tenant"}),
    _ACTIONS + "GetQuota": frozenset({"tenant"}),
    _DISPATCH + "Lease": frozenset({"dispatcher"}),
    _DISPATCH + "Report": frozenset({"dispatcher"}),
}
for _method in ("CreateTenant", "CreateToken", "RevokeToken", "SetLimits", "GetLimits", "ListAudit"):
    METHOD_ROLES[_ADMIN + _method] = frozenset({"admin"})


def principal() -> Principal:
    return PRINCIPAL.get()


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
        roles = METHOD_ROLES.get(method)
        if roles is None:
            if method.startswith("/fanout."):
                raise RuntimeError(f"{method} has no entry in METHOD_ROLES")
            return handler
        return _wrap(handler, self._guard(roles))

    def _guard(self, roles: frozenset[str]) -> Callable[[aio.ServicerContext[Any, Any]], Awaitable[None]]:
        async def guard(context: aio.ServicerContext[Any, Any]) -> None:
            token = _bearer(context)
            if not token:
                raise ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing bearer token: send 'authorization: Bearer <token>' (FANOUT_TOKEN)",
                )
            who = await self._tokens.resolve(token)
            if who is None:
                raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, "invalid or revoked token")
            if who.role not in roles:
                raise ServiceError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"a {who.role} token may not call this method (allowed: {', '.join(sorted(roles))})",
                )
            PRINCIPAL.set(who)

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


def _wrap(handler: grpc.RpcMethodHandler, guard: Callable[..., Awaitable[None]]) -> grpc.RpcMethodHandler:
    """Same handler kind, behaviour wrapped with the guard and error translation."""
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            try:
                await guard(context)
                return await inner_uu(request, context)
            except aio.AbortError:
                raise
            except Exception as exc:
                await _fail(context, exc)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )

    def streaming(inner: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def behaviour(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            try:
                await guard(context)
                async for item in inner(request, context):
                    yield item
            except aio.AbortError:
                raise
            except Exception as exc:
                await _fail(context, exc)

        return behaviour

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            streaming(handler.unary_stream), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            streaming(handler.stream_stream), handler.request_deserializer, handler.response_serializer
        )
    raise RuntimeError("stream-unary fanout methods are not expected")
