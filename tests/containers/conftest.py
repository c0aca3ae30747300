"""Fixtures of the docker backend's tests: a real engine, real images, a dispatcher on containers.

The engine and the runtime image come from scripts/docker_engine.sh (cached:
seconds when they exist); a machine where it cannot bring an engine up fails
these tests, it does not skip them. The test image adds container_tasks.py
to the runtime image at the path it has here, so task references resolve in
the containers as they do on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from fanout.dispatch.containers import LABEL_OWNER, ContainerBackend
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.docker_launcher import DockerLauncher
from fanout.server.app import ControlPlane
from tests.containers import container_tasks
from tests.helpers import LoopThread, dispatching_containers

ROOT = Path(__file__).resolve().parents[2]
TASKS_FILE = Path(container_tasks.__file__).resolve()


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    script = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker_engine.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if script.returncode != 0:
        pytest.fail(f"no Docker engine and runtime image (scripts/docker_engine.sh):\n{script.stderr[-3000:]}")
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as context:
        Path(context, "container_tasks.py").write_bytes(TASKS_FILE.read_bytes())
        Path(context, "Dockerfile").write_text(
            f"FROM fanout-runtime:dev\nCOPY --chown=0:0 container_tasks.py {TASKS_FILE}\n"
        )
        client.images.build(path=context, tag=container_tasks.IMAGE, rm=True, forcerm=True)
    yield client
    client.close()


def containers_of(engine: docker.DockerClient, owner: str) -> list[docker.models.containers.Container]:
    return engine.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})


@dataclass
class DockerDispatcher:
    dispatcher: Dispatcher
    owner: str


@pytest.fixture(scope="module")
def docker_dispatcher(
    engine: docker.DockerClient, loop_thread: LoopThread, own_plane: ControlPlane
) -> Iterator[DockerDispatcher]:
    """A dispatcher on containers, alone on its module's control plane (no process dispatcher leases there)."""
    token = loop_thread.run(own_plane.tokens.create("dispatcher"))
    owner = f"test-{os.getpid()}-{id(own_plane):x}"
    backend = ContainerBackend(DockerLauncher.from_env(), owner)
    with dispatching_containers(loop_thread, f"127.0.0.1:{own_plane.port}", token, backend) as dispatcher:
        yield DockerDispatcher(dispatcher, owner)
    assert containers_of(engine, owner) == []  # a stopped dispatcher leaves no container
