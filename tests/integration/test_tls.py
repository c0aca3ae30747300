"""TLS and mutual TLS are configuration: the same server and SDK, certificates made here with openssl."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.procs import clean_env, fanout_cmd, running
from fanout import errors
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.quota.placement import PlacementStore
from fanout.server.app import ControlPlane, create_server
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from tests.certs import make_certs
from tests.helpers import DEV, LoopThread, eventually


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_plane(
    request: pytest.FixtureRequest, loop_thread: LoopThread, settings: Settings, certs: Path
) -> Iterator[tuple[ControlPlane, str]]:
    mutual = request.param
    tls = replace(
        settings,
        tls_cert=str(certs / "server.pem"),
        tls_key=str(certs / "server.key"),
        tls_client_ca=str(certs / "ca.pem") if mutual else "",
    )
    plane = loop_thread.run(create_server(tls))
    loop_thread.run(plane.actions.register_tenant("tls"))
    token = loop_thread.run(plane.tokens.create("tenant", "tls"))
    yield plane, token
    loop_thread.run(plane.stop(grace=1))


def get_missing_run(config: ClientConfig) -> None:
    with Client(config) as client, pytest.raises(errors.NotFound):
        client.get_run("rnothere")  # NOT_FOUND proves the call went through TLS and auth


@pytest.mark.parametrize("tls_plane", [False], indirect=True)
def test_tls_clients_get_through_and_plaintext_ones_do_not(tls_plane: tuple[ControlPlane, str], certs: Path) -> None:
    plane, token = tls_plane
    endpoint = f"127.0.0.1:{plane.port}"

    get_missing_run(ClientConfig(endpoint=endpoint, token=token, tls_ca=str(certs / "ca.pem")))
    with Client(ClientConfig(endpoint=endpoint, token=token)) as plaintext, pytest.raises(errors.Unavailable):
        plaintext.call(plaintext.actions.GetRun, pb.GetRunRequest(run="rnothere"), timeout=5)


@pytest.mark.parametrize("tls_plane", [True], indirect=True)
def test_mutual_tls_needs_a_client_certificate(tls_plane: tuple[ControlPlane, str], certs: Path) -> None:
    plane, token = tls_plane
    endpoint = f"127.0.0.1:{plane.port}"
    server_only = ClientConfig(endpoint=endpoint, token=token, tls_ca=str(certs / "ca.pem"))

    get_missing_run(replace(server_only, tls_cert=str(certs / "client.pem"), tls_key=str(certs / "client.key")))
    with Client(server_only) as anonymous, pytest.raises(errors.Unavailable):
        anonymous.call(anonymous.actions.GetRun, pb.GetRunRequest(run="rnothere"), timeout=5)


@pytest.mark.parametrize("tls_plane", [True], indirect=True)
def test_a_byoc_dispatcher_connects_with_mutual_tls_and_its_token_from_a_file(
    tls_plane: tuple[ControlPlane, str], certs: Path, loop_thread: LoopThread, tmp_path: Path
) -> None:
    plane, token = tls_plane
    placement = PlacementStore(plane.redis)
    loop_thread.run(placement.set("tls", "byoc", "test", "only its own dispatcher runs it"))
    token_file = tmp_path / "dispatcher-token"
    token_file.write_text(loop_thread.run(plane.tokens.create("dispatcher", "tls")))
    token_file.chmod(0o600)
    marker = tmp_path / "ran"
    endpoint = f"127.0.0.1:{plane.port}"
    tls = {"tls_ca": str(certs / "ca.pem"), "tls_cert": str(certs / "client.pem"), "tls_key": str(certs / "client.key")}
    dispatcher = fanout_cmd(
        "dispatcher", *DEV, "--trust-tenants", "--endpoint", endpoint, "--token-file", str(token_file),
        "--tls-ca", tls["tls_ca"], "--tls-cert", tls["tls_cert"], "--tls-key", tls["tls_key"],
        "--work-dir", str(tmp_path / "actions"),
    )  # fmt: skip
    try:
        with running(dispatcher, tmp_path / "logs", r"fanout dispatcher \S+", clean_env()):
            with Client(ClientConfig(endpoint=endpoint, token=token, **tls)) as tenant:
                run = tenant.create_run(pb.ActionSpec(task_ref="module:x:y", command=["touch", str(marker)]))
                # BYOC: only this dispatcher (scoped to the tenant, over mutual TLS) could have run it.
                eventually(lambda: tenant.get_run(run.name).phase == pb.SUCCEEDED, timeout=30)
        assert marker.exists()
    finally:
        loop_thread.run(placement.set("tls", "serverless", "test", "back to the default"))
