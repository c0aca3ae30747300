"""What probes, tools and orchestrators rely on: health, reflection, current generated stubs, a bounded stop."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fanout.server.app import STOP_MARGIN_SECONDS, ControlPlane, create_server
from fanout.server.settings import Settings
from tests.helpers import LoopThread

ROOT = Path(__file__).resolve().parents[2]


def test_health_reports_serving_without_a_token(endpoint: str) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "fanout.v1.ActionService", "fanout.v1.DispatchService"):
            assert (
                stub.Check(health_pb2.HealthCheckRequest(service=service)).status
                == health_pb2.HealthCheckResponse.SERVING
            )


def test_reflection_lists_the_fanout_services(endpoint: str) -> None:
    with grpc.insecure_channel(endpoint) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in next(replies).list_services_response.service}
    assert {
        "fanout.v1.ActionService",
        "fanout.v1.DispatchService",
        "fanout.v1.AdminService",
        "fanout.v1.BundleService",
        "grpc.health.v1.Health",
    } <= names


def test_generated_stubs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_task_that_ignores_its_cancel_does_not_hold_the_stop(
    loop_thread: LoopThread, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An orchestrator kills a server that overstays its grace: stop() names what hung and goes on."""
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await released.wait()

    async def start() -> ControlPlane:
        plane = await create_server(settings)
        plane._tasks.append(asyncio.create_task(stubborn(), name="stubborn"))
        return plane

    async def release() -> None:
        released.set()

    plane = loop_thread.run(start())
    began = time.monotonic()
    try:
        loop_thread.run(plane.stop(grace=1), timeout=2 * (1 + STOP_MARGIN_SECONDS))
    finally:
        loop_thread.run(release())
    assert time.monotonic() - began < 1 + 2 * STOP_MARGIN_SECONDS
    assert "server task stubborn ignored its cancel" in caplog.text
