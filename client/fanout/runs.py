"""Starting runs from a program: `init`, `init_from_config`, `run`, and the `Run` handle."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fanout import config as config_mod
from fanout import errors, serialization, tracing
from fanout.bundles import ship
from fanout.client import TERMINAL_PHASES, Client
from fanout.config import ClientConfig
from fanout.local import LocalRun, run_locally
from fanout.task import Task
from fanout.v1 import actions_pb2 as pb

# How long wait() keeps trying to reach a control plane that went away.
RECONNECT_SECONDS = 60.0
_lock = threading.Lock()
_client: Client | None = None
_local = False  # init() found no endpoint: run() runs in this process


def init(endpoint: str | None = None, token: str | None = None, **tls: str) -> None:
    """Connect to a control plane; missing values come from the environment and config file.

    With no endpoint anywhere (no argument, no FANOUT_ENDPOINT, no config file), runs started with
    `run()` run in this process (local mode, fanout.local), as Flyte's `flyte.init()` does.
    """
    global _client, _local
    cfg = config_mod.load(endpoint=endpoint, token=token, **tls)
    if not cfg.endpoint:
        with _lock:
            _client, _local = None, True
        return
    cfg.require()
    tracing.setup("fanout-client")
    with _lock:
        # The old client is not closed: Run handles made with it keep working.
        _client, _local = Client(cfg), False


def init_from_config(path: str | None = None) -> None:
    """Connect using the config file and FANOUT_* variables.

    The file is `path`, else $FANOUT_CONFIG, else ./.fanout/config.yaml, else ~/.fanout/config.yaml.
    """
    global _client, _local
    cfg = config_mod.load(path).require()
    tracing.setup("fanout-client")
    with _lock:
        _client, _local = Client(cfg), False


def client() -> Client:
    if _client is None:
        if _local:
            raise errors.ConfigError(
                "fanout.init() found no endpoint, so runs are local (this process); for a control plane, "
                "pass endpoint= or set FANOUT_ENDPOINT"
            )
        raise errors.ConfigError("call fanout.init() or fanout.init_from_config() first")
    return _client


def run(task: Task[Any, Any], *args: Any, **kwargs: Any) -> Run | LocalRun:
    """Start `task` as the root action of a new run; returns at once (in local mode: once it ended)."""
    if _local:
        return run_locally(task, args, kwargs, "", {})
    return start_run(client(), task, *args, **kwargs)


def start_run(c: Client, task: Task[Any, Any], *args: Any, **kwargs: Any) -> Run:
    return _start(c, task, args, kwargs)


def _start(
    c: Client,
    task: Task[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    run_name: str = "",
    env_vars: Mapping[str, str] | None = None,
) -> Run:
    if not isinstance(task, Task):
        raise TypeError(f"run() needs a task made with @env.task, not {type(task).__name__}")
    task.check_arguments(args, kwargs)  # a wrong call creates nothing
    with tracing.span("fanout.run", task=task.name):  # the run's trace: the root action carries it on
        spec = task.spec("root", serialization.encode_inputs(task.name, args, kwargs, task.types))
        spec.workdir = os.getcwd()
        spec.env.update(env_vars or {})
        shipped = ship.ship(c, task)  # the code goes along, so the run works where these files are not
        if shipped is not None:
            spec.bundle.CopyFrom(shipped.bundle)
            spec.task_ref = shipped.task_ref
        return Run(c, c.create_run(spec, run_name=run_name), task.types)


async def _run_async(task: Task[Any, Any], *args: Any, **kwargs: Any) -> Run | LocalRun:
    """`run` for async callers: the blocking calls go to a thread."""
    return await asyncio.to_thread(run, task, *args, **kwargs)


async def _init_async(endpoint: str | None = None, token: str | None = None, **tls: str) -> None:
    await asyncio.to_thread(init, endpoint, token, **tls)


async def _init_from_config_async(path: str | None = None) -> None:
    await asyncio.to_thread(init_from_config, path)


# Flyte's spelling of the async forms: `await flyte.run.aio(...)`, `await flyte.init_from_config.aio()`.
run.aio = _run_async  # type: ignore[attr-defined]
init.aio = _init_async  # type: ignore[attr-defined]
init_from_config.aio = _init_from_config_async  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RunContext:
    """What `with_runcontext(...)` sets for the runs started through it.

    `name` names the run (reusing a name returns that run); `env_vars` are set for the root action.
    `labels`, `annotations`, `overwrite_cache`, `project`, `domain` and the like are accepted for Flyte
    code and not acted on. `mode="local"` runs the task tree in this process (fanout.local); no mode
    runs it where init() said (local when it found no endpoint).
    """

    name: str = ""
    env_vars: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    mode: str = ""

    def run(self, task: Task[Any, Any], *args: Any, **kwargs: Any) -> Run | LocalRun:
        if self.mode == "local" or (not self.mode and _local):
            return run_locally(task, args, kwargs, self.name, self.env_vars)
        return _start(client(), task, args, kwargs, run_name=self.name, env_vars=self.env_vars)


def with_runcontext(
    mode: str | None = None, *, name: str | None = None, env_vars: Mapping[str, str] | None = None, **options: Any
) -> RunContext:
    if mode not in (None, "remote", "local"):
        raise ValueError(f"mode={mode!r}: 'remote' (the control plane, the default) or 'local' (this process)")
    if env_vars is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
        raise TypeError("env_vars must map str to str")
    return RunContext(name or "", dict(env_vars or {}), options, mode or "")


class Run:
    def __init__(self, client: Client, run: pb.Run, types: serialization.Types | None = None) -> None:
        self._client = client
        self._run = run
        self._types = types  # the root task's, when this process started it: outputs() come back typed
        self._root: pb.ActionStatus | None = None

    @property
    def name(self) -> str:
        return self._run.name

    @property
    def url(self) -> str:
        """The run page (http://…) the control plane serves; its gRPC address when it serves none."""
        return self._run.url or run_url(self._client.config, self.name)

    @property
    def phase(self) -> str:
        return pb.Phase.Name(self._root.phase if self._root else self._client.get_run(self.name).phase)

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the root action finishes. Does not raise on failure; see outputs().

        Rides out a restarting control plane (see `follow`) for as long as the run takes.
        """
        if self._root is not None:
            return self
        try:
            for event in follow(self._client, self.name, "", timeout):
                done = [status for status in event.updates if status.phase in TERMINAL_PHASES]
                if done:
                    self._root = done[-1]
                    break
        except errors.DeadlineExceeded:
            raise errors.DeadlineExceeded(f"run {self.name} did not finish within {timeout}s") from None
        return self

    def outputs(self) -> Any:
        """The root task's return value; raises RunFailed when the run did not succeed."""
        self.wait()
        assert self._root is not None
        if self._root.phase == pb.SUCCEEDED:
            return serialization.decode_output(self._root.result.outputs, self._types)
        err = self._root.result.error
        phase = pb.Phase.Name(self._root.phase)
        raise errors.action_failed(self.name, phase, err.type or "Error", err.message, err.traceback, run=True)

    def logs(self, action: str = "", attempt: int = 0) -> str:
        """What an action of this run (default: the root) printed in one attempt (default: its latest),
        once that attempt ended; "" when nothing was kept."""
        printed = self._client.get_logs(self.name, action or self._run.root, attempt)
        return printed.output.decode("utf-8", "replace")

    def report(self, action: str = "") -> str:
        """The HTML report an action of this run (default: the root) flushed last (fanout.report); "" if none."""
        request = pb.GetReportRequest(run=self.name, action=action or self._run.root)
        return self._client.call(self._client.actions.GetReport, request).html.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, url={self.url!r})"


def follow(
    client: Client, run: str, parent: str = "", timeout: float | None = None, with_groups: bool = False
) -> Iterator[pb.WatchEvent]:
    """A watch of `parent`'s children that lasts as long as the run: replay, replay_done, then live updates.

    Changes come in batches: each event carries in `updates` every change the server had ready.

    A dropped stream is resumed from its last cursor, so nothing is missed or
    repeated and replay_done comes once. Heartbeats (events that carry only a
    cursor) prove the stream alive and are not passed on. Only a control plane
    that cannot be reached counts against RECONNECT_SECONDS: the clock starts
    when a stream drops and stops at the first event (a heartbeat at the
    latest) of a new one, so a quiet run can be followed for hours.
    Raises DeadlineExceeded after `timeout` seconds, Unavailable when the
    control plane stays unreachable, and any refusal (NotFound, AuthError) at once.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    cursor = ""
    unreachable_since: float | None = None
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            for event in client.watch_children(
                run, parent, cursor, timeout=remaining, batched=True, with_groups=with_groups
            ):
                unreachable_since = None
                cursor = event.cursor  # always one to resume from, halfway through a replay too
                if event.updates or event.HasField("replay_done"):
                    yield event
            reason = "the stream ended"  # a stopping server ends streams; resume like after any drop
        except errors.Unavailable as exc:
            reason = str(exc)
        now = time.monotonic()
        unreachable_since = unreachable_since or now
        if now - unreachable_since >= RECONNECT_SECONDS:
            raise errors.Unavailable(
                f"lost the control plane for {RECONNECT_SECONDS:.0f}s while following run {run} ({reason}); "
                f"the run goes on: follow it with `fanout watch {run}`"
            )
        time.sleep(0.5)


def run_url(cfg: ClientConfig, run: str) -> str:
    scheme = "grpcs" if cfg.tls else "grpc"
    return f"{scheme}://{cfg.endpoint}/runs/{run}"
