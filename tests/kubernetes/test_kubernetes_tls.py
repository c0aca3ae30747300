"""A control plane that speaks only TLS: pods reach it with its CA, handed to them as text.

A pod has none of the dispatcher's files, so the backend gives its worker the
CA certificate itself in FANOUT_TLS_CA (never the dispatcher's client key).
Against the FAKE API server (fake_apiserver.py), with the real client.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fanout.client import Client
from fanout.config import ClientConfig
from fanout.dispatch import backends
from fanout.dispatch.dispatcher import Dispatcher
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from fanout.server.settings import Settings
from tests.certs import make_certs
from tests.helpers import LoopThread
from tests.kubernetes import kube_tasks
from tests.kubernetes.fake_apiserver import FakeKubernetesApiServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def own_settings(settings: Settings, own_redis: object, certs: Path) -> Settings:
    url = own_redis.url  # type: ignore[attr-defined]
    return replace(settings, redis_url=url, tls_cert=str(certs / "server.pem"), tls_key=str(certs / "server.key"))


@pytest.fixture(scope="module")
def tls_dispatcher(
    fake_cluster: FakeKubernetesApiServer,
    loop_thread: LoopThread,
    own_plane: ControlPlane,
    certs: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A dispatcher on pods, made as `fanout dispatcher --backend kubernetes --tls-ca ca.pem` makes it."""
    token = loop_thread.run(own_plane.tokens.create("dispatcher"))
    ca = str(certs / "ca.pem")
    os.environ["KUBECONFIG"] = str(fake_cluster.kubeconfig)  # type: ignore[attr-defined]
    try:
        chosen = backends.choose("kubernetes", tmp_path_factory.mktemp("work"), tls={"FANOUT_TLS_CA": ca})
    finally:
        del os.environ["KUBECONFIG"]
    dispatcher = Dispatcher(
        ClientConfig(endpoint=f"127.0.0.1:{own_plane.port}", token=token, tls_ca=ca),
        chosen.backend,
        capacity=16,
        new_worker=chosen.new_worker,
    )
    running = asyncio.run_coroutine_threadsafe(dispatcher.run(), loop_thread.loop)
    yield ca
    loop_thread.loop.call_soon_threadsafe(dispatcher.stop)
    running.result(60)


def test_pods_reach_a_tls_control_plane_with_its_ca(
    fake_cluster: FakeKubernetesApiServer, loop_thread: LoopThread, own_plane: ControlPlane, tls_dispatcher: str
) -> None:
    loop_thread.run(own_plane.actions.register_tenant("kubetls"))
    token = loop_thread.run(own_plane.tokens.create("tenant", "kubetls"))
    with Client(ClientConfig(endpoint=f"127.0.0.1:{own_plane.port}", token=token, tls_ca=tls_dispatcher)) as client:
        run = start_run(client, load_task(f"file:{kube_tasks.__file__}:parallel_data_fetching"), [1, 2])
        assert [row["user_id"] for row in run.wait(timeout=120).outputs()] == [1, 2]

    pods = [
        p for p in fake_cluster.created if p["kind"] == "Pod" and p["metadata"]["annotations"]["fanout.run"] == run.name
    ]
    assert len(pods) == 3
    for pod in pods:
        env = {item["name"]: item["value"] for item in pod["spec"]["containers"][0]["env"]}
        assert env["FANOUT_TLS_CA"] == Path(tls_dispatcher).read_text()  # the certificate itself
        assert "FANOUT_TLS_KEY" not in env and "FANOUT_TLS_CERT" not in env
