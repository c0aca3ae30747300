"""Starting runs from a program: `init`, `init_from_config`, `run`, and the `Run` handle."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from fanout import config as config_mod
from fanout import errors, serialization
from fanout.client import TERMINAL_PHASES, Client
from fanout.config import ClientConfig
from fanout.task import Task
from fanout.v1 import actions_pb2 as pb

# How long wait() keeps trying to reach a control plane that went away.
RECONNECT_SECONDS = 60.0
_lock = threading.Lock()
_client: Client | None = None


def init(endpoint: str | None = None, token: str | None = None, **tls: str) -> None:
    """Connect to a control plane; missing values come from the environment and config file."""
    global _client
    cfg = config_mod.load(endpoint=endpoint, token=token, **tls).require()
    with _lock:
        # The old client is not closed: Run handles made with it keep working.
        _client = Client(cfg)


def init_from_config(path: str | None = None) -> None:
    """Connect using the config file and FANOUT_* variables.

    The file is `path`, else $FANOUT_CONFIG, else ./.fanout/config.yaml, else ~/.fanout/config.yaml.
    """
    global _client
    cfg = config_mod.load(path).require()
    with _lock:
        _client = Client(cfg)


def client() -> Client:
    if _client is None:
        raise errors.ConfigError("call fanout.init() or fanout.init_from_config() first")
    return _client


def run(task: Task[Any, Any], *args: Any, **kwargs: Any) -> Run:
    """Start `task` as the root action of a new run; returns at once."""
    return start_run(client(), task, *args, **kwargs)


def start_run(c: Client, task: Task[Any, Any], *args: Any, **kwargs: Any) -> Run:
    spec = task.spec("root", serialization.encode_inputs(task.name, args, kwargs))
    spec.workdir = os.getcwd()
    return Run(c, c.create_run(spec))


class Run:
    def __init__(self, client: Client, run: pb.Run) -> None:
        self._client = client
        self._run = run
        self._root: pb.ActionStatus | None = None

    @property
    def name(self) -> str:
        return self._run.name

    @property
    def url(self) -> str:
        return run_url(self._client.config, self.name)

    @property
    def phase(self) -> str:
        return pb.Phase.Name(self._root.phase if self._root else self._client.get_run(self.name).phase)

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the root action finishes. Does not raise on failure; see outputs().

        Rides out a restarting control plane (resuming its watch from the last
        cursor) but gives up when it stays unreachable for RECONNECT_SECONDS.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = ""
        unreachable_since: float | None = None
        while self._root is None:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for event in self._client.watch_children(self.name, "", cursor, timeout=remaining):
                    unreachable_since = None
                    if event.HasField("replay_done") or cursor:
                        cursor = event.cursor
                    if event.HasField("update") and event.update.phase in TERMINAL_PHASES:
                        self._root = event.update
                        break
            except errors.DeadlineExceeded:
                raise errors.DeadlineExceeded(f"run {self.name} did not finish within {timeout}s") from None
            except errors.Unavailable as exc:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > RECONNECT_SECONDS:
                    raise errors.Unavailable(
                        f"lost the control plane for {RECONNECT_SECONDS:.0f}s while waiting for run {self.name} "
                        f"({exc}); the run goes on: follow it with `fanout watch {self.name}`"
                    ) from None
                time.sleep(0.5)
        return self

    def outputs(self) -> Any:
        """The root task's return value; raises RunFailed when the run did not succeed."""
        self.wait()
        assert self._root is not None
        if self._root.phase == pb.SUCCEEDED:
            return serialization.decode_output(self._root.result.outputs)
        err = self._root.result.error
        raise errors.RunFailed(
            self.name, pb.Phase.Name(self._root.phase), err.type or "Error", err.message, err.traceback
        )

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, url={self.url!r})"


def run_url(cfg: ClientConfig, run: str) -> str:
    scheme = "grpcs" if cfg.tls else "grpc"
    return f"{scheme}://{cfg.endpoint}/runs/{run}"
