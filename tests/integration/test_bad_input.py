"""Bad input gets a clean answer: a clear status, nothing written, innocent siblings untouched."""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import grpc
import pytest
from grpc import aio

import fanout
from fanout.errors import InvalidRequest
from fanout.runtime import load_task
from fanout.server.app import ControlPlane, create_server
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc
from tests.conftest import TASKS_FILE, Tenant, make_tenant
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


@pytest.fixture(scope="module")
def private_plane(
    loop_thread: LoopThread, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A server on its own Redis, with no dispatcher racing the test for its actions, and a small batch cap."""
    store = RedisProcess(tmp_path_factory.mktemp("bad-input-redis")).start()
    own = loop_thread.run(create_server(replace(settings, redis_url=store.url, max_batch_bytes=BATCH_BYTES)))
    yield own
    loop_thread.run(own.stop(grace=1))
    store.stop()


@pytest.fixture
def private_tenant(loop_thread: LoopThread, private_plane: ControlPlane) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, private_plane, f"127.0.0.1:{private_plane.port}")
    yield t
    t.client.close()


BATCH_BYTES = 20_000


def test_a_batch_over_max_batch_bytes_is_refused_and_writes_nothing(private_tenant: Tenant) -> None:
    run = private_tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    batch = [pb.ActionSpec(name=f"a{i}", task_ref="m:x:y", inputs=b"i" * 1000) for i in range(30)]

    with pytest.raises(InvalidRequest, match=r"the batch is \d+ bytes, max_batch_bytes is 20000; split it"):
        private_tenant.client.submit_batch(run.name, run.root, batch)

    assert private_tenant.client.get_run(run.name).action_count == 1
    assert private_tenant.queued() == 1
    assert private_tenant.client.submit_batch(run.name, run.root, batch[:10]).admitted == 10


def test_a_root_over_its_tenants_payload_cap_is_refused_and_creates_nothing(tenant: Tenant) -> None:
    """CreateRun holds the root's inputs to the tenant's own max_payload_bytes, lower or higher than
    the server's default, checked by the script that creates the run (no limits read before it)."""
    tenant.set_limits(max_payload_bytes=1000)
    with pytest.raises(InvalidRequest, match="action 'root': inputs are 2000 bytes, max_payload_bytes is 1000"):
        tenant.client.create_run(pb.ActionSpec(task_ref="m:x:y", inputs=b"i" * 2000), run_name="too-big")
    with pytest.raises(fanout.errors.NotFound):
        tenant.client.get_run("too-big")

    existing = tenant.client.create_run(pb.ActionSpec(task_ref="m:x:y", inputs=b"i" * 1000), run_name="fits")
    with pytest.raises(InvalidRequest, match="inputs are 2000 bytes"):  # bad input first, run or no run
        tenant.client.create_run(pb.ActionSpec(task_ref="m:x:y", inputs=b"i" * 2000), run_name=existing.name)

    default = Settings().limits.max_payload_bytes
    tenant.set_limits(max_payload_bytes=2 * default)
    run = tenant.client.create_run(pb.ActionSpec(task_ref="m:x:y", inputs=b"i" * (default + 1)), run_name="raised")
    assert run.name == "raised"


def test_a_refused_batch_names_each_bad_action_and_writes_nothing(tenant: Tenant) -> None:
    tenant.set_limits(max_payload_bytes=1000)
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    batch = [
        pb.ActionSpec(name="ok1", task_ref="m:x:y"),
        pb.ActionSpec(name="big", task_ref="m:x:y", inputs=b"i" * 2000),
        pb.ActionSpec(name="ok2", task_ref="m:x:y"),
        pb.ActionSpec(name="bad/name", task_ref="m:x:y"),
    ]

    with pytest.raises(InvalidRequest) as info:
        tenant.client.submit_batch(run.name, run.root, batch)

    assert [field for field, _ in info.value.violations] == ["actions[1].inputs", "actions[3].name"]
    assert "inputs are 2000 bytes, max_payload_bytes is 1000" in info.value.violations[0][1]
    assert "2 of 4 actions are invalid" in str(info.value)
    assert tenant.client.get_run(run.name).action_count == 1


@pytest.mark.usefixtures("dispatcher")
def test_one_bad_child_input_fails_only_that_child(tenant: Tenant) -> None:
    tenant.set_limits(max_payload_bytes=1000)
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)

    outputs = fanout.run(load_task(f"file:{TASKS_FILE}:one_big_input"), 2000).outputs()

    assert outputs[0] == "x" and outputs[2] == "xxx", outputs
    assert re.fullmatch(
        r"InvalidRequest: action 'text_of-\w+': inputs are \d+ bytes, max_payload_bytes is 1000", outputs[1]
    ), outputs


@pytest.mark.usefixtures("dispatcher")
def test_an_output_over_the_tenants_cap_fails_only_that_action_in_its_runtime(tenant: Tenant) -> None:
    tenant.set_limits(max_payload_bytes=1000)
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)

    started = time.monotonic()
    outputs = fanout.run(load_task(f"file:{TASKS_FILE}:one_big_output"), 2000).outputs()

    assert outputs[0] == "x", outputs
    assert re.fullmatch(r"OutputTooLarge: the result is \d+ bytes, max_payload_bytes is 1000", outputs[1]), outputs
    assert time.monotonic() - started < 10  # failed at once, not a lease lost after its expiry


def test_a_report_batch_applies_each_report_on_its_own(
    private_tenant: Tenant, private_plane: ControlPlane, loop_thread: LoopThread
) -> None:
    private_tenant.set_limits(max_payload_bytes=1000)
    big = private_tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    fine = private_tenant.client.create_run(pb.ActionSpec(task_ref="module:x:y"))
    token = loop_thread.run(private_plane.tokens.create("dispatcher", private_tenant.name))
    outbox: queue.Queue[dpb.LeaseRequest | None] = queue.Queue()
    outbox.put(dpb.LeaseRequest(hello=dpb.Hello(dispatcher_id="reports", capacity=2)))

    def requests() -> Iterator[dpb.LeaseRequest]:
        while (message := outbox.get()) is not None:
            yield message

    with grpc.insecure_channel(f"127.0.0.1:{private_plane.port}") as channel:
        stub = dispatch_pb2_grpc.DispatchServiceStub(channel)
        call = stub.Lease(requests(), metadata=bearer(token), timeout=30)
        leased: dict[str, dpb.LeasedAction] = {}
        try:
            while len(leased) < 2:
                leased.update((a.run, a) for a in next(call).actions)
        finally:
            outbox.put(None)
            call.cancel()

        def report(run: str, outputs: bytes, name: str = "root") -> dpb.PhaseReport:
            attempt = leased[run].attempt
            return dpb.PhaseReport(
                tenant=private_tenant.name,
                run=run,
                name=name,
                attempt=attempt,
                phase=pb.SUCCEEDED,
                result=pb.ActionResult(outputs=outputs),
            )

        answer = stub.Report(
            dpb.ReportRequest(
                reports=[report(big.name, b"o" * 5000), report(fine.name, b"ok"), report(fine.name, b"", "bad/name")]
            ),
            metadata=bearer(token),
        )

    # The runtime is told the tenant's own cap with each lease.
    assert {a.max_payload_bytes for a in leased.values()} == {1000}
    assert [r.field for r in answer.refused] == ["reports[2].name"]
    too_big = private_tenant.client.get_action(big.name, "root")
    assert too_big.phase == pb.FAILED
    assert too_big.result.error.type == "OutputTooLarge"
    assert "outputs are 5000 bytes, max_payload_bytes is 1000" in too_big.result.error.message
    sibling = private_tenant.client.get_action(fine.name, "root")
    assert sibling.phase == pb.SUCCEEDED
    assert sibling.result.outputs == b"ok"
