"""What the kubernetes backend asks of a cluster: valid objects, only the rights deploy/ grants, no leftovers.

Against the FAKE API server (fake_apiserver.py), with the real client.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from fanout.dispatch.containers import DEFAULT_IMAGE, LABEL_OWNER, LABEL_TENANT, ContainerBackend, WorkerSpec
from fanout.dispatch.kubernetes_launcher import pod_manifest
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread, eventually
from tests.kubernetes import kube_tasks
from tests.kubernetes.conftest import PodDispatcher, launcher_for
from tests.kubernetes.fake_apiserver import FakeKubernetesApiServer, write_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes" / "base"


@pytest.fixture
def tenant(loop_thread: LoopThread, own_plane: ControlPlane) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, own_plane, f"127.0.0.1:{own_plane.port}", prefix="kube")
    yield t
    t.client.close()


def granted(path: Path, kind: str) -> set[tuple[str, str]]:
    """(verb, resource) pairs the `kind` (Role or ClusterRole) in `path` grants."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == kind]
    assert len(docs) == 1
    rules = docs[0]["rules"]
    assert all(rule["apiGroups"] == [""] for rule in rules)  # the core group only
    return {(verb, resource) for rule in rules for resource in rule["resources"] for verb in rule["verbs"]}


def test_the_fake_refuses_what_a_cluster_would(fake_cluster: FakeKubernetesApiServer) -> None:
    """The fake validates for real: each broken copy of a good pod is refused with 422, the good one taken."""
    api = k8s.CoreV1Api(launcher_for(fake_cluster, "refusals")._api_client)
    spec = WorkerSpec("fanout-refused", DEFAULT_IMAGE, ("true",), {}, {LABEL_OWNER: "refusals"})
    namespace: Any = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "refusals"}}
    api.create_namespace(namespace)
    good = pod_manifest(spec, "refusals")
    broken = []
    for path, value in [
        (("spec", "containers"), "worker"),  # not a list
        (("spec", "containers", 0, "imagePullPolicy"), 3),  # not a string
        (("spec", "containers", 0, "cpuLimit"), "1"),  # no such field
        (("spec", "securityContext", "runAsUser"), "root"),  # not an integer
    ]:
        pod = copy.deepcopy(good)
        place: Any = pod
        for key in path[:-1]:
            place = place[key]
        place[path[-1]] = value
        broken.append(pod)
    for pod in broken:  # over plain HTTP: the client checks some types itself, the fake must check them all
        request = urllib.request.Request(
            f"{fake_cluster.url}/api/v1/namespaces/refusals/pods", json.dumps(pod).encode(), method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 422
        assert json.load(refused.value)["reason"] == "Invalid"
    assert fake_cluster.pods_labelled(**{LABEL_OWNER: "refusals"}) == []
    api.create_namespaced_pod("refusals", good)  # and the good one is taken
    api.delete_namespaced_pod("fanout-refused", "refusals", grace_period_seconds=0)


def test_the_backend_uses_only_the_rights_deploy_grants(
    fake_cluster: FakeKubernetesApiServer, pod_dispatcher: PodDispatcher, tenant: Tenant
) -> None:
    before = len(fake_cluster.calls)
    run = start_run(tenant.client, load_task(f"file:{kube_tasks.__file__}:sleeper"), 60.0)
    eventually(lambda: fake_cluster.pods_labelled(**{LABEL_OWNER: pod_dispatcher.owner}), timeout=60)
    tenant.client.abort_run(run.name, reason="test")  # a delete too
    eventually(lambda: not fake_cluster.pods_labelled(**{LABEL_OWNER: pod_dispatcher.owner}), timeout=30)

    used = {(verb, resource) for verb, resource, _ in fake_cluster.calls[before:]}
    assert {("create", "pods"), ("delete", "pods")} <= used
    # Every call the module's dispatcher made (a namespace per tenant) is in the hosted ClusterRole.
    everything = {(verb, resource) for verb, resource, _ in fake_cluster.calls}
    assert everything <= granted(DEPLOY / "dispatcher-per-tenant.yaml", "ClusterRole")


def test_a_restarted_dispatcher_removes_the_pods_its_predecessor_left(
    fake_cluster: FakeKubernetesApiServer, loop_thread: LoopThread
) -> None:
    owner = f"restart-{os.getpid()}"
    spec = WorkerSpec(
        "fanout-leftover0000000", DEFAULT_IMAGE, ("sleep", "300"), {}, {LABEL_OWNER: owner, LABEL_TENANT: "left"}
    )
    first = launcher_for(fake_cluster, owner)
    loop_thread.run(first.start(spec))  # then the dispatcher dies: nobody removes it
    eventually(lambda: fake_cluster.pods_labelled(**{LABEL_OWNER: owner}), timeout=10)

    backend = ContainerBackend(launcher_for(fake_cluster, owner), owner)
    assert loop_thread.run(backend.recover()) == []
    try:
        assert fake_cluster.pods_labelled(**{LABEL_OWNER: owner}) == []
    finally:
        loop_thread.run(backend.shutdown())
        loop_thread.run(first.close())


def test_the_pods_end_is_told_by_the_watch_not_a_poll(
    fake_cluster: FakeKubernetesApiServer, loop_thread: LoopThread
) -> None:
    owner = f"watch-{os.getpid()}"
    launcher = launcher_for(fake_cluster, owner)
    spec = WorkerSpec(
        "fanout-exits0000000000", DEFAULT_IMAGE, ("sh", "-c", "exit 3"), {}, {LABEL_OWNER: owner, LABEL_TENANT: "w"}
    )
    try:
        reads = len(fake_cluster.calls)
        loop_thread.run(launcher.start(spec))
        ended = loop_thread.run(asyncio.wait_for(launcher.wait(spec.name), 20))
        assert (ended.code, ended.oom_killed, ended.reason) == (3, False, "Error")
        assert ("get", "pods") not in {(verb, resource) for verb, resource, _ in fake_cluster.calls[reads:]}
        loop_thread.run(launcher.remove([spec.name]))
    finally:
        loop_thread.run(launcher.close())


def test_without_a_cluster_the_dispatcher_says_so(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        config = write_kubeconfig(f"http://127.0.0.1:{closed.getsockname()[1]}", tmp_path / "config")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "KUBERNETES_"))}
    result = subprocess.run(
        [sys.executable, "-m", "fanout.cli.main", "dispatcher", "--backend", "kubernetes",
         "--endpoint", "127.0.0.1:1", "--work-dir", str(tmp_path / "work")],
        env={**env, "KUBECONFIG": str(config), "FANOUT_TOKEN": "x"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "no Kubernetes API server is reachable" in result.stderr
