"""Fixtures of the kubernetes backend's tests: the FAKE API server (fake_apiserver.py), a dispatcher on pods.

No Kubernetes API server can run here, so the backend's real client talks to
a fake one that validates every object against the real schema and whose
kubelet runs each pod's command as a local process. The image it knows is
the runtime image's name, run with this interpreter (whose environment has
fanout installed, as the image has).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import config

from fanout.dispatch.containers import DEFAULT_IMAGE, ContainerBackend
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.kubernetes_launcher import KubernetesLauncher
from fanout.server.app import ControlPlane
from tests.helpers import LoopThread, dispatching_containers
from tests.kubernetes.fake_apiserver import FakeKubernetesApiServer

# What the fake kubelet's processes start with for the runtime image: this interpreter first on PATH.
RUNTIME_ENV = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp"}


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubernetesApiServer]:
    api = FakeKubernetesApiServer({DEFAULT_IMAGE: RUNTIME_ENV}).start()
    api.kubeconfig = api.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")  # type: ignore[attr-defined]
    yield api
    api.stop()


def launcher_for(api: FakeKubernetesApiServer, owner: str, namespace: str = "fanout-{tenant}") -> KubernetesLauncher:
    client = config.new_client_from_config(config_file=str(api.kubeconfig))  # type: ignore[attr-defined]
    return KubernetesLauncher(client, owner, namespace)


@dataclass
class PodDispatcher:
    dispatcher: Dispatcher
    owner: str


@pytest.fixture(scope="module")
def pod_dispatcher(
    request: pytest.FixtureRequest,
    fake_cluster: FakeKubernetesApiServer,
    loop_thread: LoopThread,
    own_plane: ControlPlane,
) -> Iterator[PodDispatcher]:
    """A dispatcher on pods, alone on its module's control plane (no process dispatcher leases there).

    Its pods go where the module's NAMESPACE says (default: a namespace per tenant)."""
    token = loop_thread.run(own_plane.tokens.create("dispatcher"))
    owner = f"test-{os.getpid()}-{id(own_plane):x}"
    namespace = getattr(request.module, "NAMESPACE", "fanout-{tenant}")
    backend = ContainerBackend(launcher_for(fake_cluster, owner, namespace), owner)
    with dispatching_containers(loop_thread, f"127.0.0.1:{own_plane.port}", token, backend) as dispatcher:
        yield PodDispatcher(dispatcher, owner)
    assert fake_cluster.pods_labelled(**{"fanout.owner": owner}) == []  # a stopped dispatcher leaves no pod
