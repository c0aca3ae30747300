"""Credentials: busy addresses, action tokens that expire, secrets kept out of Redis and `ps`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from fanout.server.app import ControlPlane, create_server
from fanout.server.dispatcher.dispatcher import Dispatcher
from fanout.server.errors import StartupError
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc
from tests.conftest import Tenant
from tests.helpers import LoopThread, eventually


def test_a_second_server_on_a_busy_port_is_refused(
    loop_thread: LoopThread, plane: ControlPlane, settings: Settings
) -> None:
    with pytest.raises(StartupError, match="in use"):
        second = loop_thread.run(create_server(replace(settings, listen=f"127.0.0.1:{plane.port}")))
        loop_thread.run(second.stop(grace=0))


def leaked_token_run(tenant: Tenant, out: Path, then: str = "true") -> str:
    """A run whose root writes its own action token to `out` (as a hostile task could), then runs `then`."""
    script = f'printf %s "$FANOUT_TOKEN" > {out}.tmp && mv {out}.tmp {out} && {then}'
    return tenant.client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["sh", "-c", script])).name


def get_run_code(endpoint: str, token: str, run: str) -> grpc.StatusCode:
    channel = grpc.insecure_channel(endpoint)
    try:
        actions_pb2_grpc.ActionServiceStub(channel).GetRun(
            pb.GetRunRequest(run=run), metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()
    finally:
        channel.close()


def test_an_action_token_expires_when_its_action_finishes(
    tenant: Tenant, dispatcher: Dispatcher, endpoint: str, tmp_path: Path
) -> None:
    out = tmp_path / "token"
    run = leaked_token_run(tenant, out)
    eventually(lambda: tenant.client.get_run(run).phase == pb.SUCCEEDED)

    assert get_run_code(endpoint, out.read_text(), run) == grpc.StatusCode.UNAUTHENTICATED


def test_an_action_token_expires_when_its_run_is_aborted(
    tenant: Tenant, dispatcher: Dispatcher, endpoint: str, tmp_path: Path
) -> None:
    out = tmp_path / "token"
    run = leaked_token_run(tenant, out, then="sleep 30")
    token = eventually(lambda: out.exists() and out.read_text())
    assert get_run_code(endpoint, token, run) == grpc.StatusCode.OK  # valid while its attempt runs

    tenant.client.abort_run(run)

    assert get_run_code(endpoint, token, run) == grpc.StatusCode.UNAUTHENTICATED
