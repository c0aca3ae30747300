"""The backends a dispatcher can run on (`--backend`), built the same way by `fanout dispatcher` and `fanout up`."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fanout.dispatch.backend import Backend
from fanout.dispatch.pools import WorkerFactory, WorkerProcess
from fanout.dispatch.sandbox import Sandbox

BACKENDS = ("process", "docker")


@dataclass(frozen=True)
class Chosen:
    backend: Backend
    new_worker: WorkerFactory  # how the dispatcher's pools start reusable workers


def choose(
    name: str,
    work_dir: Path,
    image: str = "",
    max_output_bytes: int = 1 << 20,
    sandbox: Sandbox | None = None,
    tls: Mapping[str, str] | None = None,
) -> Chosen:
    """The backend `name`; ValueError for an unknown name, EngineUnavailable when docker has no engine.

    `sandbox` and `tls` are for local processes: a container is its own sandbox, and reaches the
    control plane without the dispatcher's files."""
    if name == "process":
        from fanout.dispatch.process_backend import ProcessBackend

        return Chosen(ProcessBackend(work_dir, max_output_bytes, sandbox=sandbox, tls=tls), WorkerProcess)
    if name == "docker":
        from fanout.dispatch.containers import DEFAULT_IMAGE, ContainerBackend
        from fanout.dispatch.docker_launcher import DockerLauncher

        docker = ContainerBackend(DockerLauncher.from_env(), owner_of(work_dir), image or DEFAULT_IMAGE)
        return Chosen(docker, docker.new_worker)
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def owner_of(work_dir: Path) -> str:
    """A dispatcher place's name for its containers' owner label: the same after a restart, another elsewhere."""
    place = f"{socket.gethostname()}:{work_dir.resolve()}"
    return hashlib.sha256(place.encode()).hexdigest()[:16]
