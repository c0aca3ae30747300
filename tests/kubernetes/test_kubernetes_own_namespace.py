"""A dispatcher whose pods all go to one namespace (a BYOC pool in its own): a Role there is all it needs.

Against the FAKE API server (fake_apiserver.py), with the real client.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread
from tests.kubernetes import kube_tasks
from tests.kubernetes.conftest import PodDispatcher
from tests.kubernetes.fake_apiserver import FakeKubernetesApiServer
from tests.kubernetes.test_kubernetes_cluster import DEPLOY, granted

NAMESPACE = "fanout-byoc"  # read by the pod_dispatcher fixture

pytestmark = pytest.mark.e2e


@pytest.fixture
def tenant(loop_thread: LoopThread, own_plane: ControlPlane, fake_cluster: FakeKubernetesApiServer) -> Iterator[Tenant]:
    # The namespace is the admin's (kubectl apply -k deploy/kubernetes/overlays/byoc makes it), not the dispatcher's.
    fake_cluster.namespaces.setdefault(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace"})
    t = make_tenant(loop_thread, own_plane, f"127.0.0.1:{own_plane.port}", prefix="byoc")
    yield t
    t.client.close()


def test_the_seed_fanout_runs_in_the_one_namespace_with_a_role(
    fake_cluster: FakeKubernetesApiServer, pod_dispatcher: PodDispatcher, tenant: Tenant
) -> None:
    before = len(fake_cluster.calls)
    run = start_run(tenant.client, load_task(f"file:{kube_tasks.__file__}:parallel_data_fetching"), [1, 2, 3])

    assert [row["user_id"] for row in run.wait(timeout=120).outputs()] == [1, 2, 3]

    calls = fake_cluster.calls[before:]
    pods = [
        p
        for p in fake_cluster.created
        if p["kind"] == "Pod" and p["metadata"]["annotations"].get("fanout.run") == run.name
    ]
    assert len(pods) == 4 and {p["metadata"]["namespace"] for p in pods} == {NAMESPACE}
    # Nothing cluster-wide (no namespace made or read, no list of all pods): all in its own namespace...
    assert {namespace for _, _, namespace in calls} == {NAMESPACE}
    # ...and within what the Role of deploy/kubernetes/base/dispatcher/rbac.yaml grants.
    assert {(verb, resource) for verb, resource, _ in calls} <= granted(DEPLOY / "dispatcher" / "rbac.yaml", "Role")
