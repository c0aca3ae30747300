"""What probes and tools rely on: health, reflection, and current generated stubs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

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
        "grpc.health.v1.Health",
    } <= names


def test_generated_stubs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
