"""Bad input gets a clean answer: a clear status, nothing written, innocent siblings untouched."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc import aio

from fanout.server.app import ControlPlane
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc
from tests.conftest import Tenant
from tests.helpers import LoopThread

# A GetRunRequest / WatchChildrenRequest / LeaseRequest whose field 1 is a
# length-delimited value that is not valid UTF-8 (nor a valid nested message).
GARBAGE = b"\x0a\x02\xff\xfe"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def identity(data: bytes) -> bytes:
    return data


@pytest.fixture
def channel(endpoint: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(endpoint) as ch:
        yield ch


@pytest.fixture
def dispatcher_token(loop_thread: LoopThread, plane: ControlPlane) -> str:
    return loop_thread.run(plane.tokens.create("dispatcher"))


def raw_codes(channel: grpc.Channel, metadata: list[tuple[str, str]]) -> dict[str, grpc.StatusCode]:
    """Send GARBAGE to one RPC of each kind; the status each one ends with."""
    calls = {
        "unary": lambda: channel.unary_unary(
            "/fanout.v1.ActionService/GetRun", request_serializer=identity, response_deserializer=identity
        )(GARBAGE, metadata=metadata, timeout=10),
        "server-stream": lambda: list(
            channel.unary_stream(
                "/fanout.v1.ActionService/WatchChildren", request_serializer=identity, response_deserializer=identity
            )(GARBAGE, metadata=metadata, timeout=10)
        ),
        "bidi-stream": lambda: list(
            channel.stream_stream(
                "/fanout.v1.DispatchService/Lease", request_serializer=identity, response_deserializer=identity
            )(iter([GARBAGE]), metadata=metadata, timeout=10)
        ),
    }
    codes = {}
    for kind, call in calls.items():
        with pytest.raises(grpc.RpcError) as info:
            call()
        codes[kind] = info.value.code()
    return codes


def test_an_unparsable_body_is_unauthenticated_without_a_token_and_logs_one_short_line(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        codes = raw_codes(channel, bearer("fo_t_made-up"))
        codes_without = raw_codes(channel, [])

    assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes
    assert set(codes_without.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes_without
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a bad request"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 6


def test_an_unparsable_body_is_invalid_argument_with_a_valid_token(
    channel: grpc.Channel, tenant: Tenant, dispatcher_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        tenant_codes = raw_codes(channel, bearer(tenant.token))
        dispatcher_codes = raw_codes(channel, bearer(dispatcher_token))

    # The tenant may call the action methods; the dispatcher may call Lease.
    assert tenant_codes["unary"] == grpc.StatusCode.INVALID_ARGUMENT
    assert tenant_codes["server-stream"] == grpc.StatusCode.INVALID_ARGUMENT
    assert tenant_codes["bidi-stream"] == grpc.StatusCode.PERMISSION_DENIED
    assert dispatcher_codes["bidi-stream"] == grpc.StatusCode.INVALID_ARGUMENT
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a bad request"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 6
    # ...and the server keeps serving.
    assert tenant.client.get_quota().tenant == tenant.name


def test_unauthenticated_lease_streams_are_always_unauthenticated(endpoint: str) -> None:
    # A dispatcher writes hello and its first credits at once, and keeps its
    # side open; the refusal must not race those writes into INTERNAL.
    async def attempt(stub: dispatch_pb2_grpc.DispatchServiceStub) -> grpc.StatusCode:
        outbox: asyncio.Queue[dpb.LeaseRequest | None] = asyncio.Queue()
        outbox.put_nowait(dpb.LeaseRequest(hello=dpb.Hello(dispatcher_id="d", capacity=4)))
        for _ in range(50):
            outbox.put_nowait(dpb.LeaseRequest(credit=1))

        async def requests() -> AsyncIterator[dpb.LeaseRequest]:
            while (message := await outbox.get()) is not None:
                yield message

        call = stub.Lease(requests(), metadata=bearer("fo_d_made-up"), timeout=10)
        try:
            async for _ in call:
                pass
        except grpc.RpcError as exc:
            return exc.code()
        finally:
            outbox.put_nowait(None)
        return grpc.StatusCode.OK

    async def attempts() -> Counter[grpc.StatusCode]:
        async with aio.insecure_channel(endpoint) as channel:
            stub = dispatch_pb2_grpc.DispatchServiceStub(channel)
            return Counter([await attempt(stub) for _ in range(200)])

    assert asyncio.run(attempts()) == {grpc.StatusCode.UNAUTHENTICATED: 200}
