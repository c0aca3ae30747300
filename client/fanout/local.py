"""Local mode: `with_runcontext(mode="local").run(task, ...)` runs the task tree in this process.

No control plane is involved: outside an action a task call is a plain call of
its function (task.py), so the root and every child it awaits run here, on one
event loop, as ordinary coroutines (plain `def` tasks as plain calls). It is
for trying code and for tests; limits, retries, timeouts and containers are
the control plane's and do not apply. A task's exception is raised as it is,
from `outputs()`, not wrapped in the remote errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fanout import output
from fanout.task import Task


class LocalRun:
    """The outcome of a local run, with the surface of a remote Run."""

    def __init__(self, name: str, value: Any, error: BaseException | None, printed: str) -> None:
        self.name = name
        self._value = value
        self._error = error
        self._printed = printed

    @property
    def url(self) -> str:
        return f"local://{self.name}"

    @property
    def phase(self) -> str:
        return "FAILED" if self._error is not None else "SUCCEEDED"

    def wait(self, timeout: float | None = None) -> LocalRun:
        return self  # it ended before run() returned

    def outputs(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def logs(self, action: str = "", attempt: int = 0) -> str:
        """What the run printed (one process: every task's output together)."""
        return self._printed

    def __repr__(self) -> str:
        return f"LocalRun(name={self.name!r}, phase={self.phase!r})"


def run_locally(
    task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str, env_vars: Mapping[str, str]
) -> LocalRun:
    if not isinstance(task, Task):
        raise TypeError(f"run() needs a task made with @env.task, not {type(task).__name__}")
    task.check_arguments(args, kwargs)
    output.install()
    value: Any = None
    error: BaseException | None = None
    with _environment({**task.env.env_vars, **env_vars}), output.capture() as printed:
        try:
            value = _call(task, args, kwargs)
        except Exception as exc:  # the task's failure is the run's, raised by outputs()
            error = exc
    return LocalRun(name or "local-" + secrets.token_hex(4), value, error, printed.value().decode("utf-8", "replace"))


def _call(task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not task.is_async:
        return task(*args, **kwargs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(task(*args, **kwargs))
    # Called from a running loop (a notebook, an async caller): the run gets a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, task(*args, **kwargs)).result()


@contextmanager
def _environment(env_vars: Mapping[str, str]) -> Iterator[None]:
    """The run's environment variables, for its duration only."""
    before = {key: os.environ.get(key) for key in env_vars}
    os.environ.update(env_vars)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
