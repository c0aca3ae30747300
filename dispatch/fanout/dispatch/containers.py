"""Container backends: workers in containers, started through a Launcher (Docker now, Kubernetes later).

A container backend starts the same workers as the process backend (worker.py)
and runs them through the same pool machinery (pools.py): a one-shot action
gets a pool of one worker that lives as long as the action, a reusable
environment a pool of `replicas` containers. Only how a worker starts, ends
and talks differs:

- A worker cannot share pipes with the dispatcher, so it dials in: the
  container runs `python -m fanout.dispatch.worker --connect HOST:PORT` and
  claims its slot at the dispatcher's WorkerListener with the key put in its
  environment (worker_listener.py). Its environment holds nothing else of
  the dispatcher's: the spec's env, the control plane's address, the slot
  id and key. The action tokens arrive with the actions, on the connection.
- The Launcher starts, observes and removes containers. Every container is
  labelled with its owner (one dispatcher place, stable across restarts of
  that dispatcher) and what it runs, so a restarted dispatcher finds what its
  predecessor left and removes it (recover()): their actions' leases lapse
  and the control plane runs them again, each still ending once.
- A container killed for memory (OOMKilled) ends the actions it ran as
  failures of type OOMKilled (errors.OOMError in the SDK); one that died
  otherwise loses them (a pool's run again after their leases; a one-shot
  action fails as ProcessExited with the exit code).

A launcher for another engine implements the Launcher protocol below and
nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fanout import memory
from fanout.dispatch.backend import Outcome, StartedCallback, failure
from fanout.dispatch.pools import START_TIMEOUT_SECONDS, FramedWorker, Pool, PoolKey, WorkerLost
from fanout.dispatch.worker import ENV_CONCURRENCY, ENV_WORKER_ID, ENV_WORKER_KEY
from fanout.dispatch.worker_listener import Connection, WorkerListener
from fanout.v1 import dispatch_pb2 as dpb

log = logging.getLogger(__name__)

# The image the project builds for workers (deploy/runtime.Dockerfile, scripts/docker_engine.sh).
DEFAULT_IMAGE = "fanout-runtime:dev"
WORKER_COMMAND = ("python3", "-m", "fanout.dispatch.worker", "--connect")
# A non-root uid for every worker, whatever the image says.
WORKER_USER = "10001:10001"
# Labels every container carries; LABEL_OWNER is what a restarted dispatcher looks for.
LABEL_OWNER = "fanout.owner"
LABEL_WORKER = "fanout.worker"
LABEL_TENANT = "fanout.tenant"
LABEL_RUN = "fanout.run"
LABEL_ACTION = "fanout.action"
LABEL_ATTEMPT = "fanout.attempt"
LABEL_POOL = "fanout.pool"
# What an error message quotes of a container's output.
LOG_TAIL_BYTES = 2000
# How long a worker whose connection closed may take to exit before it is removed anyway.
EXIT_GRACE_SECONDS = 5.0
# A one-shot action's pool: one worker, one action, gone with the action.
_ONE_SHOT_IDLE_SECONDS = 3600.0


@dataclass(frozen=True)
class WorkerSpec:
    """One worker container, as a launcher is asked to start it."""

    name: str  # unique on the engine; the handle the other calls take
    image: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    labels: Mapping[str, str]
    memory_bytes: int | None = None  # hard limit, no swap beyond it
    cpu_nanos: int | None = None  # CPUs x 1e9
    user: str = WORKER_USER


@dataclass(frozen=True)
class Exit:
    code: int
    oom_killed: bool = False
    reason: str = ""  # the engine's word for why, when it has one (ErrImagePull, Error...)


class Launcher(Protocol):
    """What a container engine must offer a ContainerBackend. Every call may block only its own task."""

    async def start(self, spec: WorkerSpec) -> None:
        """Create and start the container (host networking, no mounts, spec's limits and labels)."""
        ...

    async def wait(self, name: str) -> Exit:
        """Its exit, once it ended (also when it was removed: killed)."""
        ...

    async def remove(self, names: Sequence[str]) -> None:
        """Kill and delete these containers; names already gone are fine."""
        ...

    async def list(self, labels: Mapping[str, str]) -> list[str]:
        """Names of the containers carrying all of these labels, running or not."""
        ...

    async def log_tail(self, name: str, size: int) -> str:
        """The last `size` bytes (about) of its output, for an error message; "" if there is none."""
        ...

    async def close(self) -> None: ...


class ContainerWorker(FramedWorker):
    """A pool's worker in a container of its own."""

    def __init__(self, pool: Pool, backend: ContainerBackend, labels: Mapping[str, str]) -> None:
        super().__init__(pool)
        self._backend = backend
        self._labels = labels
        self._container = ""
        self._exit: asyncio.Future[Exit] | None = None
        self._removal: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self._container or "(starting container)"

    async def start(self) -> None:
        backend = self._backend
        await backend.start()
        worker_id, key, connected = backend.listener.expect()
        spec = backend.worker_spec(self.pool, worker_id, key, self._labels)
        self._container = spec.name
        # Shielded: a start cancelled midway (an abort, a shutdown) still ends with the container
        # created or not, never with one created behind our back after its removal.
        launched = asyncio.ensure_future(backend.launcher.start(spec))
        try:
            await asyncio.shield(launched)
            await self._wait_until_connected(spec, connected)
        except BaseException as exc:
            connected.cancel()
            await asyncio.gather(launched, return_exceptions=True)
            await self._remove()
            if isinstance(exc, Exception) and not isinstance(exc, RuntimeError):
                raise RuntimeError(f"cannot start a container from {spec.image}: {exc}") from None
            raise

    async def _wait_until_connected(self, spec: WorkerSpec, connected: asyncio.Future[Connection]) -> None:
        self._exit = asyncio.ensure_future(self._backend.launcher.wait(spec.name))
        await asyncio.wait({connected, self._exit}, timeout=START_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        if not connected.done() or connected.cancelled():
            how = _how_it_ended(self._exit.result()) if self._exit.done() else "did not connect in time"
            output = await self._backend.launcher.log_tail(spec.name, LOG_TAIL_BYTES)
            raise RuntimeError(f"the worker in container {spec.name} ({spec.image}) {how}; last output:\n{output}")
        connection = connected.result()
        try:
            await self._connect(connection.reader, connection.writer)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            connection.writer.close()
            raise RuntimeError(f"the worker in container {spec.name} did not start: {exc!r}") from None

    async def _wait_exit(self) -> tuple[int, Outcome | None]:
        assert self._exit is not None
        try:
            ended = await asyncio.wait_for(asyncio.shield(self._exit), EXIT_GRACE_SECONDS)
        except TimeoutError:  # it closed the connection but lives on: not ours to keep
            await self._remove()
            try:
                ended = await asyncio.wait_for(asyncio.shield(self._exit), EXIT_GRACE_SECONDS)
            except TimeoutError:  # the engine never told its end: it is removed, that is enough
                ended = Exit(-1)
        await self._remove()
        if ended.oom_killed:
            limit = self.pool.template.spec.resources.memory
            return ended.code, failure("OOMKilled", f"the action's container ran out of its memory limit ({limit})")
        return ended.code, None

    def kill(self) -> None:
        if self._removal is None and self._container:
            self._removal = asyncio.create_task(self._backend.launcher.remove([self._container]))

    async def _remove(self) -> None:
        self.kill()
        if self._removal is not None:
            try:
                await asyncio.shield(self._removal)
            except Exception:  # the engine refused: the backend's shutdown sweeps by label again
                log.exception("could not remove container %s", self._container)

    async def stop(self) -> None:
        """Remove it: whatever it still runs is given up (as a stopped process's would be)."""
        self._close_input()
        await self._remove()
        await self._stop_reading()


@dataclass
class ContainerBackend:
    """Runs actions in containers through `launcher`; see the module doc.

    owner: names this dispatcher's place (say, its work directory) across its
    restarts; a restart removes every container labelled with it.
    """

    runs_images = True

    launcher: Launcher
    owner: str
    default_image: str = DEFAULT_IMAGE
    listen_host: str = "127.0.0.1"  # docker: containers use host networking, so loopback reaches us
    dial_host: str = ""  # the host workers dial, when it is not the one we listen on (a pod's IP)
    # The control plane's CA (PEM text) when it speaks TLS: a container has none of our files, so its
    # worker gets the certificate itself in FANOUT_TLS_CA. Never a client key: that is the dispatcher's.
    tls_ca_pem: str = ""
    listener: WorkerListener = field(init=False)
    _started: bool = field(default=False, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self.listener = WorkerListener(self.listen_host)

    async def start(self) -> None:
        async with self._lock:
            if not self._started:
                await self.listener.start()
                self._started = True

    @property
    def worker_address(self) -> str:
        """HOST:PORT that workers dial to reach this dispatcher."""
        if not self.dial_host:
            return self.listener.address
        port = self.listener.address.rsplit(":", 1)[1]
        return f"[{self.dial_host}]:{port}" if ":" in self.dial_host else f"{self.dial_host}:{port}"

    def new_worker(self, pool: Pool, log_path: Path | None) -> FramedWorker:
        """The Pools' worker factory: a replica of a reusable environment (output stays in the container log)."""
        return ContainerWorker(pool, self, {LABEL_POOL: pool.key.label})

    def worker_spec(self, pool: Pool, worker_id: str, key: str, labels: Mapping[str, str]) -> WorkerSpec:
        spec = pool.template.spec
        env = dict(spec.env)
        env.update(
            FANOUT_ENDPOINT=pool.env["FANOUT_ENDPOINT"],
            FANOUT_CONFIG="/dev/null",  # its actions' tokens come with them
            **({"FANOUT_TLS_CA": self.tls_ca_pem} if self.tls_ca_pem else {}),
            **{ENV_CONCURRENCY: str(pool.key.concurrency), ENV_WORKER_ID: worker_id, ENV_WORKER_KEY: key},
        )
        return WorkerSpec(
            name=f"fanout-{worker_id}",
            image=spec.image or self.default_image,
            command=(*WORKER_COMMAND, self.worker_address),
            env=env,
            labels={LABEL_OWNER: self.owner, LABEL_WORKER: worker_id, LABEL_TENANT: pool.key.tenant, **labels},
            memory_bytes=memory.to_bytes(spec.resources.memory) if spec.resources.memory else None,
            cpu_nanos=cpu_nanos(spec.resources.cpu) if spec.resources.cpu else None,
        )

    async def run(self, action: dpb.LeasedAction, endpoint: str, on_started: StartedCallback) -> Outcome:
        spec = action.spec
        if spec.command:
            return failure("LaunchError", "container backends run Python tasks; an explicit command is not supported")
        # A pool of one worker for this action alone, with its code (bundle) like any pool's.
        key = dataclasses.replace(PoolKey.of(action), replicas=1, concurrency=1, idle_ttl=_ONE_SHOT_IDLE_SECONDS)
        labels = {LABEL_RUN: action.run, LABEL_ACTION: spec.name, LABEL_ATTEMPT: str(action.attempt)}
        pool = Pool(key, {"FANOUT_ENDPOINT": endpoint}, None, action, lambda p, _: ContainerWorker(p, self, labels))
        try:
            return await pool.run(action, on_started)
        except WorkerLost as exc:
            return failure("ProcessExited", f"the action's container ended without a result: {exc}")
        finally:
            # Also when aborted (cancelled): the container goes with its action.
            await asyncio.shield(pool.shutdown())

    async def recover(self) -> list[tuple[dpb.LeasedAction, Outcome]]:
        """Remove what an earlier dispatcher of this place left: its workers' results lived only in memory."""
        await self.start()
        leftovers = await self.launcher.list({LABEL_OWNER: self.owner})
        if leftovers:
            log.warning("removing %d containers an earlier dispatcher left; their actions run again", len(leftovers))
            await self.launcher.remove(leftovers)
        return []

    async def release(self, action: dpb.LeasedAction, outcome: Outcome) -> None:
        return None  # nothing is kept: the outcome came over the connection

    def waiting(self, action: dpb.LeasedAction) -> None:
        return None  # containers are bounded by the dispatcher's capacity, not by a room of their own

    async def shutdown(self) -> None:
        await self.listener.close()
        # Whatever is left (a start in flight when the pools stopped): by label, in one batch.
        with contextlib.suppress(Exception):
            await self.launcher.remove(await self.launcher.list({LABEL_OWNER: self.owner}))
        await self.launcher.close()


def _how_it_ended(ended: Exit) -> str:
    return f"exited with code {ended.code}" + (f" ({ended.reason})" if ended.reason else "")


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")


def cpu_nanos(quantity: str) -> int:
    """Billionths of a CPU in a Kubernetes CPU quantity ("500m", "2", "1.5"); ValueError if it is not one."""
    match = _CPU.match(quantity.strip())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"cpu {quantity!r} is not a quantity like '500m' or '2'")
    cpus = float(match[1]) / (1000 if match[2] else 1)
    return max(math.ceil(cpus * 1e9), 1_000_000)  # the engine refuses less than a thousandth
