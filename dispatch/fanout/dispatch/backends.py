"""The backends a dispatcher can run on (`--backend`), built the same way by `fanout dispatcher` and `fanout up`."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fanout.dispatch.backend import Backend
from fanout.dispatch.pools import WorkerFactory, WorkerProcess
from fanout.dispatch.sandbox import Sandbox
from fanout.errors import ConfigError

BACKENDS = ("process", "docker", "kubernetes")


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
    namespace: str = "",
    worker_host: str = "",
) -> Chosen:
    """The backend `name`; ValueError for an unknown name, a StartupError when its engine or cluster is absent.

    `tls`: the dispatcher's FANOUT_TLS_* variables. Local processes get them as they are; a container
    gets only the CA, as text (it has none of our files). `sandbox` is for local processes: a
    container is its own sandbox. `namespace` (a template with {tenant}) and
    `worker_host` (the address its pods dial back to) are the kubernetes backend's."""
    if name == "process":
        from fanout.dispatch.process_backend import ProcessBackend

        return Chosen(ProcessBackend(work_dir, max_output_bytes, sandbox=sandbox, tls=tls), WorkerProcess)
    if name == "docker":
        from fanout.dispatch.containers import DEFAULT_IMAGE, ContainerBackend
        from fanout.dispatch.docker_launcher import DockerLauncher

        docker = ContainerBackend(
            DockerLauncher.from_env(), owner_of(work_dir), image or DEFAULT_IMAGE, tls_ca_pem=_ca_pem(tls)
        )
        return Chosen(docker, docker.new_worker)
    if name == "kubernetes":
        from fanout.dispatch.containers import DEFAULT_IMAGE, ContainerBackend
        from fanout.dispatch.kubernetes_launcher import DEFAULT_NAMESPACE, KubernetesLauncher

        owner = owner_of(work_dir)
        launcher = KubernetesLauncher.from_config(owner, namespace or DEFAULT_NAMESPACE)
        # Pods do not share our network namespace: listen on every interface, tell them the one to dial.
        host = worker_host or os.environ.get("POD_IP", "") or "127.0.0.1"
        listen = "127.0.0.1" if host == "127.0.0.1" else "0.0.0.0"
        pods = ContainerBackend(
            launcher, owner, image or DEFAULT_IMAGE, listen_host=listen, dial_host=host, tls_ca_pem=_ca_pem(tls)
        )
        return Chosen(pods, pods.new_worker)
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def owner_of(work_dir: Path) -> str:
    """A dispatcher place's name for its containers' owner label: the same after a restart, another elsewhere."""
    place = f"{socket.gethostname()}:{work_dir.resolve()}"
    return hashlib.sha256(place.encode()).hexdigest()[:16]


def _ca_pem(tls: Mapping[str, str] | None) -> str:
    """The control plane's CA as PEM text, for containers; "" without TLS."""
    ca = (tls or {}).get("FANOUT_TLS_CA", "")
    if not ca or ca.lstrip().startswith("-----BEGIN"):
        return ca
    try:
        return Path(ca).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS CA {ca}: {exc.strerror}") from None
