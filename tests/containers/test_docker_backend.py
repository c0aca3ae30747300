"""The docker backend end to end: a real engine, real containers, a real control plane.

Each test runs through the module's dispatcher on containers (conftest.py);
what the containers were is read from the engine itself (its events and
inspect), not from the backend's own bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest

import fanout
from fanout import errors
from fanout.dispatch.containers import (
    LABEL_ACTION,
    LABEL_ATTEMPT,
    LABEL_OWNER,
    LABEL_POOL,
    LABEL_RUN,
    LABEL_TENANT,
)
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from tests.conftest import Tenant, make_tenant
from tests.containers import container_tasks
from tests.containers.conftest import TASKS_FILE, DockerDispatcher
from tests.helpers import LoopThread, eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def tenant(loop_thread: LoopThread, own_plane: ControlPlane) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, own_plane, f"127.0.0.1:{own_plane.port}", prefix="docker")
    yield t
    t.client.close()


def task(name: str) -> Any:
    return load_task(f"file:{TASKS_FILE}:{name}")


def started_containers(engine: docker.DockerClient, owner: str, since: float) -> list[dict[str, str]]:
    """The labels of every container of `owner` that the engine started since `since` (its own event log)."""
    events = engine.events(
        since=int(since), until=int(time.time()) + 1, decode=True,
        filters={"type": "container", "event": "start", "label": f"{LABEL_OWNER}={owner}"},
    )  # fmt: skip
    return [event["Actor"]["Attributes"] for event in events]


def live(engine: docker.DockerClient, **labels: str) -> list[str]:
    """Ids of the running containers carrying these labels (no inspect: one may be removed meanwhile)."""
    filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
    return [c["Id"] for c in engine.api.containers(filters=filters)]


def test_the_seed_fanout_runs_a_container_per_action(
    engine: docker.DockerClient, docker_dispatcher: DockerDispatcher, tenant: Tenant
) -> None:
    since = time.time() - 1
    run = start_run(tenant.client, task("parallel_data_fetching"), [1, 2, 3, 4, 5])

    outputs = run.wait(timeout=120).outputs()

    assert [row["user_id"] for row in outputs] == [1, 2, 3, 4, 5]
    assert outputs[2] == {"user_id": 3, "name": "User_3", "score": 30}
    started = eventually(lambda: started_containers(engine, docker_dispatcher.owner, since), timeout=10)
    ours = [labels for labels in started if labels.get(LABEL_RUN) == run.name]
    # The root and each of its five children: six containers, one per action, each labelled with it.
    assert len(ours) == 6
    assert sorted(labels[LABEL_ACTION] for labels in ours).count("root") == 1
    assert {labels[LABEL_TENANT] for labels in ours} == {tenant.name}
    assert {labels[LABEL_ATTEMPT] for labels in ours} == {"1"}
    # Finished actions take their containers with them.
    eventually(lambda: live(engine, **{LABEL_RUN: run.name}) == [], timeout=20)


def test_a_reusable_environment_runs_on_a_pool_of_containers(
    engine: docker.DockerClient, docker_dispatcher: DockerDispatcher, tenant: Tenant
) -> None:
    since = time.time() - 1
    run = start_run(tenant.client, task("pooled_fanout"), list(range(1, 25)))

    outputs = run.wait(timeout=120).outputs()

    assert [row["user_id"] for row in outputs] == list(range(1, 25))
    hosts = {row["host"] for row in outputs}  # a container's hostname is its id: how many served them
    assert 1 <= len(hosts) <= 2  # ReusePolicy(replicas=2): 24 actions on at most two containers
    started = started_containers(engine, docker_dispatcher.owner, since)
    replicas = [labels for labels in started if LABEL_POOL in labels and labels[LABEL_TENANT] == tenant.name]
    assert 1 <= len(replicas) <= 2
    assert all(LABEL_RUN not in labels for labels in replicas)  # a replica serves the environment, not one run


@pytest.mark.parametrize("hog", ["hog", "pooled_hog"])
def test_exceeding_the_memory_limit_is_an_oom_error(
    docker_dispatcher: DockerDispatcher, tenant: Tenant, hog: str
) -> None:
    run = start_run(tenant.client, task(hog), 512)  # 512 MiB in a 128 MiB container, alone or a pool's replica

    with pytest.raises(errors.OOMError) as failed:
        run.wait(timeout=120).outputs()

    assert failed.value.error_type == "OOMKilled"
    assert "128Mi" in str(failed.value)


def test_abort_kills_the_running_containers(
    engine: docker.DockerClient, docker_dispatcher: DockerDispatcher, tenant: Tenant
) -> None:
    run = start_run(tenant.client, task("sleepy_fan"), 3, 120.0)
    # The root and its three children, all running in containers of their own.
    eventually(lambda: len(live(engine, **{LABEL_RUN: run.name})) == 4, timeout=60)

    tenant.client.abort_run(run.name, reason="test")

    eventually(lambda: live(engine, **{LABEL_RUN: run.name}) == [], timeout=30)
    with pytest.raises(errors.ActionAbortedError):
        run.wait(timeout=30).outputs()


def test_a_container_is_locked_down(
    engine: docker.DockerClient, docker_dispatcher: DockerDispatcher, tenant: Tenant
) -> None:
    run = start_run(tenant.client, task("sleeper"), 120.0)
    [container] = eventually(lambda: live(engine, **{LABEL_RUN: run.name}), timeout=60)
    try:
        attrs = engine.api.inspect_container(container)
        labels = attrs["Config"]["Labels"]
        assert labels[LABEL_TENANT] == tenant.name
        assert (labels[LABEL_RUN], labels[LABEL_ACTION], labels[LABEL_ATTEMPT]) == (run.name, "root", "1")
        assert labels[LABEL_OWNER] == docker_dispatcher.owner
        assert attrs["Mounts"] == [] and not attrs["HostConfig"]["Binds"]
        assert attrs["Config"]["User"] == "10001:10001"
        assert attrs["HostConfig"]["NetworkMode"] == "host"
        assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
        assert attrs["Config"]["Image"] == "fanout-test-tasks:dev"  # the TaskEnvironment's image
    finally:
        tenant.client.abort_run(run.name, reason="test")

    inside = start_run(tenant.client, task("look_around")).wait(timeout=120).outputs()

    assert inside["uid"] == 10001
    # Its environment: the image's basics and the worker's own few variables; nothing of the
    # dispatcher's (its token, its Redis URL, its PATH...), and the slot key is gone once read.
    assert set(inside["env"]) <= {
        "PATH", "HOME", "HOSTNAME", "PYTHONUNBUFFERED",
        "LC_CTYPE",  # set by Python itself in a C locale (PEP 538)
        "FANOUT_ENDPOINT", "FANOUT_CONFIG", "FANOUT_WORKER_CONCURRENCY",
    }  # fmt: skip
    assert "FANOUT_ENDPOINT" in inside["env"]
    # The mounts of any container (its root, /proc, /sys, /dev...): none from the host's disk.
    mount_points = {line.split()[1] for line in inside["mounts"]}
    assert not mount_points & {"/work", "/root", "/home", "/tmp", "/var/run/docker.sock"}


def test_an_image_the_engine_lacks_fails_the_action_naming_it(
    docker_dispatcher: DockerDispatcher, tenant: Tenant
) -> None:
    run = start_run(tenant.client, task("lost"))

    with pytest.raises(errors.ActionFailed) as failed:
        run.wait(timeout=60).outputs()

    assert failed.value.error_type == "WorkerStartError"
    assert "fanout-no-such-image:never" in failed.value.message


def test_a_worker_that_cannot_start_fails_the_action_with_its_output(
    docker_dispatcher: DockerDispatcher, tenant: Tenant
) -> None:
    run = start_run(tenant.client, task("unstartable"))  # the base image has Python but no fanout

    with pytest.raises(errors.ActionFailed) as failed:
        run.wait(timeout=60).outputs()

    assert failed.value.error_type == "WorkerStartError"
    assert "exited with code 1" in failed.value.message
    assert "No module named" in failed.value.message  # the container's own output says why


def test_an_image_the_sdk_builds_is_what_its_tasks_run_in(
    engine: docker.DockerClient, docker_dispatcher: DockerDispatcher, tenant: Tenant
) -> None:
    uri = fanout.build(container_tasks.BUILT)

    assert engine.images.get(uri).tags == [uri]
    run = start_run(tenant.client, task("read_image"))
    assert run.wait(timeout=120).outputs() == ["built", "from-the-image"]
