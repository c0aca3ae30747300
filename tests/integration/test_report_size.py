"""A dispatcher's Report calls stay under the server's message cap, however big the results.

The server refuses a message over its max_message_bytes (RESOURCE_EXHAUSTED), and a
refused Report is dropped for good: its actions' leases lapse and they run again, to be
refused again. A tenant's results may each be up to its max_payload_bytes (1 MiB by
default), so a call of a thousand of them could be a gigabyte: the reporter splits its
calls by bytes as well as by count. Here a real server takes messages of 1 MiB at most,
the reporter's byte cap is a quarter of that, and the reports hold 2.4 MB of results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc
import pytest

from fanout.dispatch import reporter
from fanout.server.app import ControlPlane, create_server
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import dispatch_pb2_grpc
from tests.helpers import LoopThread

SERVER_CAP = 1 << 20
REPORTS = 24
RESULT_BYTES = 100 * 1024


@pytest.fixture
def capped_plane(loop_thread: LoopThread, settings: Settings) -> Iterator[ControlPlane]:
    plane = loop_thread.run(create_server(replace(settings, max_message_bytes=SERVER_CAP)))
    yield plane
    loop_thread.run(plane.stop(grace=1))


class CallSizes(grpc.aio.UnaryUnaryClientInterceptor):
    """The size of every Report call a real channel makes."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if isinstance(request, dpb.ReportRequest):
            self.sizes.append(request.ByteSize())
        return await continuation(details, request)


def test_reports_with_big_results_go_in_calls_the_server_accepts(
    loop_thread: LoopThread, capped_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reporter, "MAX_BYTES_PER_CALL", SERVER_CAP // 4)
    token = loop_thread.run(capped_plane.tokens.create("dispatcher"))

    def finished(i: int) -> dpb.PhaseReport:
        report = dpb.PhaseReport(tenant="big-results", run="r1", name=f"a{i}", attempt=1, phase=pb.SUCCEEDED)
        report.result.outputs = bytes([i]) * RESULT_BYTES
        return report

    async def send_all() -> tuple[list[bool], list[int]]:
        sizes = CallSizes()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{capped_plane.port}", interceptors=[sizes]) as channel:
            reports = reporter.Reporter(
                dispatch_pb2_grpc.DispatchServiceStub(channel), (("authorization", f"Bearer {token}"),)
            )
            reports.start()
            try:
                answered = await asyncio.gather(*(reports.report_answered(finished(i)) for i in range(REPORTS)))
            finally:
                await reports.stop()
        return list(answered), sizes.sizes

    answered, sizes = loop_thread.run(send_all())
    assert answered == [True] * REPORTS  # every call answered: none refused as too big
    assert sum(sizes) > SERVER_CAP  # what one call would have carried
    assert max(sizes) <= SERVER_CAP // 4 + RESULT_BYTES + 1024  # at most one report past the cap
