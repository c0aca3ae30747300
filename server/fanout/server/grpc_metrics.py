"""Every RPC counted by service, method and status code, with its duration.

An interceptor outside the auth interceptor, so refused calls are counted too.
A stream's duration is the stream's whole life (a lease stream lasts as long
as its dispatcher stays connected), so streams get their own histogram buckets
apart from unary calls' latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "fanout_grpc_requests_total", "RPCs finished, by service, method and status code.", ["service", "method", "code"]
)
DURATION = Histogram(
    "fanout_grpc_request_duration_seconds",
    "How long unary RPCs took, by service and method.",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
STREAM_DURATION = Histogram(
    "fanout_grpc_stream_duration_seconds",
    "How long streaming RPCs stayed open, by service and method.",
    ["service", "method"],
    buckets=(0.1, 1, 10, 60, 600, 3600, 86400),
)


def _names(full_method: str) -> tuple[str, str]:
    """'/fanout.v1.ActionService/SubmitBatch' -> ('fanout.v1.ActionService', 'SubmitBatch')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method


def _code(context: aio.ServicerContext[Any, Any], failure: BaseException | None) -> str:
    if isinstance(failure, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED.name
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if failure is not None and not isinstance(failure, aio.AbortError):
        return grpc.StatusCode.UNKNOWN.name
    return grpc.StatusCode.OK.name


class MetricsInterceptor(aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        service, method = _names(details.method)

        def done(context: aio.ServicerContext[Any, Any], failure: BaseException | None, started: float) -> float:
            REQUESTS.labels(service, method, _code(context, failure)).inc()
            return time.perf_counter() - started

        if handler.unary_unary:
            inner_uu = handler.unary_unary
            latency = DURATION.labels(service, method)

            async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                started, failure = time.perf_counter(), None
                try:
                    return await inner_uu(request, context)
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    latency.observe(done(context, failure, started))

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )

        lifetime = STREAM_DURATION.labels(service, method)

        def streaming(inner: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def behaviour(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                started, failure = time.perf_counter(), None
                try:
                    async for item in inner(request, context):
                        yield item
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    lifetime.observe(done(context, failure, started))

            return behaviour

        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                streaming(handler.unary_stream), handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                streaming(handler.stream_stream), handler.request_deserializer, handler.response_serializer
            )
        return handler  # stream-unary: no fanout method is one; passed through uncounted
