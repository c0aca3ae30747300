"""The kubernetes backend end to end: the real client, a FAKE API server (fake_apiserver.py), a real control plane.

Each test runs through the module's dispatcher on pods (conftest.py). What the
pods were is read from the fake API server (the objects it accepted, each
validated against the real Kubernetes schema), not from the backend's own
bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fanout import errors
from fanout.dispatch.containers import LABEL_ACTION, LABEL_ATTEMPT, LABEL_OWNER, LABEL_POOL, LABEL_RUN, LABEL_TENANT
from fanout.dispatch.kubernetes_launcher import namespace_name
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread, eventually
from tests.kubernetes import kube_tasks
from tests.kubernetes.conftest import PodDispatcher
from tests.kubernetes.fake_apiserver import FakeKubernetesApiServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def tenant(loop_thread: LoopThread, own_plane: ControlPlane) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, own_plane, f"127.0.0.1:{own_plane.port}", prefix="kube")
    yield t
    t.client.close()


def task(name: str) -> Any:
    return load_task(f"file:{kube_tasks.__file__}:{name}")


def pods_of_run(api: FakeKubernetesApiServer, run: str) -> list[dict[str, Any]]:
    """Every pod the API server accepted for `run`, as the backend sent it."""
    return [pod for pod in api.created if pod["kind"] == "Pod" and pod["metadata"]["annotations"].get(LABEL_RUN) == run]


def live_pods(api: FakeKubernetesApiServer, run: str) -> list[str]:
    return [
        pod["metadata"]["name"] for pod in api.pods_labelled() if pod["metadata"]["annotations"].get(LABEL_RUN) == run
    ]


def test_the_seed_fanout_runs_a_pod_per_action(
    fake_cluster: FakeKubernetesApiServer, pod_dispatcher: PodDispatcher, tenant: Tenant
) -> None:
    run = start_run(tenant.client, task("parallel_data_fetching"), [1, 2, 3, 4, 5])

    outputs = run.wait(timeout=120).outputs()

    assert [row["user_id"] for row in outputs] == [1, 2, 3, 4, 5]
    assert outputs[2] == {"user_id": 3, "name": "User_3", "score": 30}
    pods = pods_of_run(fake_cluster, run.name)
    # The root and each of its five children: six pods, one per action, each labelled with it.
    assert len(pods) == 6
    annotations = [pod["metadata"]["annotations"] for pod in pods]
    assert sorted(a[LABEL_ACTION] for a in annotations).count("root") == 1
    assert {a[LABEL_TENANT] for a in annotations} == {tenant.name}
    assert {a[LABEL_ATTEMPT] for a in annotations} == {"1"}
    assert {pod["metadata"]["labels"][LABEL_OWNER] for pod in pods} == {pod_dispatcher.owner}
    # In the tenant's own namespace, which the dispatcher made.
    assert {pod["metadata"]["namespace"] for pod in pods} == {namespace_name("fanout-{tenant}", tenant.name)}
    assert namespace_name("fanout-{tenant}", tenant.name) in fake_cluster.namespaces
    # Finished actions take their pods with them.
    eventually(lambda: live_pods(fake_cluster, run.name) == [], timeout=20)
    assert fake_cluster.refused == []


def test_a_reusable_environment_runs_on_a_pool_of_pods(
    fake_cluster: FakeKubernetesApiServer, pod_dispatcher: PodDispatcher, tenant: Tenant
) -> None:
    before = len(fake_cluster.created)
    run = start_run(tenant.client, task("pooled_fanout"), list(range(1, 25)))

    outputs = run.wait(timeout=120).outputs()

    assert [row["user_id"] for row in outputs] == list(range(1, 25))
    assert 1 <= len({row["worker"] for row in outputs}) <= 2  # ReusePolicy(replicas=2)
    replicas = [
        pod
        for pod in fake_cluster.created[before:]
        if pod["kind"] == "Pod" and LABEL_POOL in pod["metadata"]["labels"]
        and pod["metadata"]["annotations"][LABEL_TENANT] == tenant.name
    ]  # fmt: skip
    assert 1 <= len(replicas) <= 2
    assert all(LABEL_RUN not in pod["metadata"]["labels"] for pod in replicas)  # it serves the environment


def test_a_pod_past_its_memory_limit_is_an_oom_error(pod_dispatcher: PodDispatcher, tenant: Tenant) -> None:
    run = start_run(tenant.client, task("hog"), 512)  # 512 MiB in a 128 MiB pod

    with pytest.raises(errors.OOMError) as failed:
        run.wait(timeout=120).outputs()

    assert failed.value.error_type == "OOMKilled"
    assert "128Mi" in str(failed.value)


def test_the_pod_has_the_limits_and_lockdown_of_its_environment(
    fake_cluster: FakeKubernetesApiServer, pod_dispatcher: PodDispatcher, tenant: Tenant
) -> None:
    with pytest.raises(errors.OOMError):
        start_run(tenant.client, task("hog"), 512).wait(timeout=120).outputs()
    [pod] = [
        p
        for p in fake_cluster.created
        if p["kind"] == "Pod" and p["metadata"]["annotations"].get(LABEL_TENANT) == tenant.name
    ]
    spec = pod["spec"]
    [container] = spec["containers"]
    assert container["resources"] == {
        "limits": {"memory": "128Mi", "cpu": "500m"},
        "requests": {"memory": "128Mi", "cpu": "500m"},
    }
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False  # no credential of the cluster
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "volumes" not in spec and "volumeMounts" not in container
    # Its environment: the control plane's address and the worker's own slot; no token of anyone's.
    assert {item["name"] for item in container["env"]} == {
        "FANOUT_ENDPOINT", "FANOUT_CONFIG", "FANOUT_WORKER_CONCURRENCY", "FANOUT_WORKER_ID", "FANOUT_WORKER_KEY",
    }  # fmt: skip


def test_abort_deletes_the_running_pods(
    fake_cluster: FakeKubernetesApiServer, pod_dispatcher: PodDispatcher, tenant: Tenant
) -> None:
    run = start_run(tenant.client, task("sleeper"), 120.0)
    eventually(lambda: len(live_pods(fake_cluster, run.name)) == 1, timeout=60)
    calls = len(fake_cluster.calls)

    tenant.client.abort_run(run.name, reason="test")

    eventually(lambda: live_pods(fake_cluster, run.name) == [], timeout=30)
    assert "delete" in {verb for verb, resource, _ in fake_cluster.calls[calls:] if resource == "pods"}
    with pytest.raises(errors.ActionAbortedError):
        run.wait(timeout=30).outputs()


def test_an_image_the_kubelet_cannot_pull_fails_the_action_naming_it(
    pod_dispatcher: PodDispatcher, tenant: Tenant
) -> None:
    run = start_run(tenant.client, task("unreachable"))

    with pytest.raises(errors.ActionFailed) as failed:
        run.wait(timeout=60).outputs()

    assert failed.value.error_type == "WorkerStartError"
    assert "ErrImagePull" in failed.value.message
    assert "fanout-no-such-image:never" in failed.value.message
