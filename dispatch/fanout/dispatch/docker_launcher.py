"""The Docker launcher: worker containers through the Docker Engine API (the `docker` package).

Every container: the spec's image, a non-root uid, host networking (the
worker dials the dispatcher on loopback), no mounts, every capability
dropped and no privilege gain, memory (with no swap beyond it) and CPU
limits from the action's Resources, and the labels the backend gives.

The engine's client is blocking: every call runs on this launcher's own
threads, never on the event loop, and never on the loop's default executor
(tasks of the dispatcher use that). Exits are not waited for one thread per
container: one thread follows the engine's event stream ("die" events of
containers labelled as fanout workers) and resolves the waiting futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors

from fanout.dispatch.containers import LABEL_WORKER, Exit, WorkerSpec
from fanout.server.errors import StartupError

log = logging.getLogger(__name__)

# Engine calls in flight at once (each holds a connection of the client's pool).
THREADS = 16
T = TypeVar("T")


class EngineUnavailable(StartupError):
    """No Docker engine answers where the client looks (DOCKER_HOST, or the local socket); the CLI exits 2."""


class DockerLauncher:
    def __init__(self, client: docker.DockerClient) -> None:
        self._client = client
        self._api = client.api
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="fanout-docker")
        self._exits: dict[str, asyncio.Future[Exit]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: Any = None  # the engine's event stream, closed by close()
        self._follower: threading.Thread | None = None
        self._subscribing = asyncio.Lock()  # one event stream, however many starts come at once

    @classmethod
    def from_env(cls) -> DockerLauncher:
        """The engine of DOCKER_HOST (or the local socket); EngineUnavailable if none answers."""
        try:
            client = docker.from_env(max_pool_size=THREADS)
            client.ping()
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(
                f"no Docker engine is reachable ({exc}); start one (scripts/docker_engine.sh does, as root) "
                "or set DOCKER_HOST"
            ) from None
        return cls(client)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, lambda: fn(*args, **kwargs))

    async def _follow_exits(self) -> None:
        """Subscribe to the engine's die events (once, before the first container starts)."""
        async with self._subscribing:
            if self._follower is not None:
                return
            self._loop = asyncio.get_running_loop()
            filters = {"type": "container", "event": ["die"], "label": [LABEL_WORKER]}
            # Returns once the engine answered: from here on, no die event is missed.
            self._events = await self._call(self._api.events, decode=True, filters=filters)
            self._follower = threading.Thread(target=self._read_events, name="fanout-docker-events", daemon=True)
            self._follower.start()

    def _read_events(self) -> None:
        events: Iterator[dict[str, Any]] = self._events
        try:
            for event in events:
                attributes = event.get("Actor", {}).get("Attributes", {})
                name = attributes.get("name", "")
                code = int(attributes.get("exitCode", -1))
                # OOMKilled is in the container's state only: read it on a pool thread, not here.
                self._threads.submit(self._ended, name, code)
        except Exception as exc:  # the stream closed (close()) or the engine went away
            log.debug("docker event stream ended: %r", exc)

    def _ended(self, name: str, code: int) -> None:
        oom = False
        with contextlib.suppress(docker.errors.DockerException):
            oom = bool(self._api.inspect_container(name)["State"].get("OOMKilled"))
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._resolve, name, Exit(code, oom))

    def _resolve(self, name: str, ended: Exit) -> None:
        future = self._exits.pop(name, None)
        if future is not None and not future.done():
            future.set_result(ended)

    async def start(self, spec: WorkerSpec) -> None:
        await self._follow_exits()
        self._exits[spec.name] = asyncio.get_running_loop().create_future()
        try:
            await self._call(self._create_and_start, spec)
        except BaseException:
            self._exits.pop(spec.name, None)
            raise

    def _create_and_start(self, spec: WorkerSpec) -> None:
        limits: dict[str, Any] = {}
        if spec.memory_bytes:
            limits.update(mem_limit=spec.memory_bytes, memswap_limit=spec.memory_bytes)
        if spec.cpu_nanos:
            limits.update(nano_cpus=spec.cpu_nanos)
        host_config = self._api.create_host_config(
            network_mode="host",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            **limits,
        )
        self._api.create_container(
            spec.image,
            command=list(spec.command),
            entrypoint=[],  # the command is the whole command line, whatever the image's entrypoint
            environment=dict(spec.env),
            labels=dict(spec.labels),
            user=spec.user,
            name=spec.name,
            host_config=host_config,
            detach=True,
        )
        self._api.start(spec.name)

    async def wait(self, name: str) -> Exit:
        future = self._exits.get(name)
        if future is None:  # not started here (or its end was told already): ask the engine
            state = (await self._call(self._api.inspect_container, name))["State"]
            if state.get("Running"):
                raise RuntimeError(f"container {name} was not started by this launcher")
            return Exit(int(state.get("ExitCode", -1)), bool(state.get("OOMKilled")))
        return await asyncio.shield(future)

    async def remove(self, names: Sequence[str]) -> None:
        await asyncio.gather(*(self._call(self._remove_one, name) for name in names))

    def _remove_one(self, name: str) -> None:
        try:
            self._api.remove_container(name, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already in progress
                raise

    async def list(self, labels: Mapping[str, str]) -> list[str]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        found = await self._call(self._api.containers, all=True, filters=filters)
        return [c["Names"][0].lstrip("/") for c in found]

    async def log_tail(self, name: str, size: int) -> str:
        try:
            # Lines, not bytes, are what the engine cuts by: ask for enough and cut the rest here.
            output: bytes = await self._call(self._api.logs, name, stdout=True, stderr=True, tail=200)
        except docker.errors.DockerException:
            return ""
        return output[-size:].decode(errors="replace")

    async def close(self) -> None:
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
        for future in self._exits.values():
            future.cancel()
        self._exits.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self._client.close)
