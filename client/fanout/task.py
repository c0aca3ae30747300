"""The authoring API: `TaskEnvironment` and its `@env.task` decorator.

Shaped like the Flyte 2 SDK, so `import fanout as flyte` runs code written
for it. Calling a task inside a running action submits a child action (see
controller.py); calling it anywhere else just runs the function here.

A task is an `async def` function or a plain `def` one. A worker runs a
plain one in its thread pool (see Task.invoke), so a blocking task never
stalls the event loop the worker's other actions share. Called from an
async parent, either kind is awaited; called from a plain task (in its
thread), a task call blocks that thread until the child action finished.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar

from fanout import controller, groups, memory, policies, serialization, tracing
from fanout.bundles import active
from fanout.image import Image
from fanout.policies import RetryStrategy, Timeout
from fanout.v1 import actions_pb2 as pb

P = ParamSpec("P")
R = TypeVar("R")

# Modules loaded from a file by the runtime get this name prefix; their tasks
# are referred to by file path, like tasks in a script run as __main__.
FILE_MODULE_PREFIX = "__fanout_file__"

# The event loop of the action a plain task's thread runs for: its child calls are submitted there.
_ACTION_LOOP: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "fanout_action_loop", default=None
)

TaskFunction = Callable[P, Coroutine[Any, Any, R]] | Callable[P, R]


# Options Flyte's @env.task and task.override() take that this platform accepts and does not act on.
FLYTE_TASK_OPTIONS = frozenset(
    {"docs", "pod_template", "interruptible", "max_inline_io_bytes", "queue", "triggers", "links"}
)
FLYTE_OVERRIDE_OPTIONS = frozenset(
    {
        "cache",
        "env_vars",
        "secrets",
        "reusable",
        "pod_template",
        "interruptible",
        "max_inline_io_bytes",
        "queue",
        "links",
    }
)


def _only_flyte_options(where: str, given: dict[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword arguments: {', '.join(unknown)}")


@dataclass(frozen=True)
class Resources:
    """What one action may use. `gpu`, `disk` and `shm` are accepted for Flyte code; no backend here uses them."""

    cpu: str | int | float | None = None
    memory: str | int | None = None
    gpu: str | int | None = None
    disk: str | None = None
    shm: str | None = None

    def __post_init__(self) -> None:
        if self.memory is not None:
            memory.to_bytes(self.memory)  # a bad quantity fails where it is written


@dataclass(frozen=True)
class ReusePolicy:
    """Run the environment's actions in reusable workers (Flyte 2's `reusable=`).

    Up to `replicas` worker processes, each running up to `concurrency`
    actions at once as asyncio tasks; a worker without work for `idle_ttl`
    seconds stops. Without a policy, every action gets a process of its own.
    """

    replicas: int | tuple[int, int] = 1
    concurrency: int = 1
    idle_ttl: float | timedelta = 30.0

    def __post_init__(self) -> None:
        low, high = self.replicas if isinstance(self.replicas, tuple) else (1, self.replicas)
        if not all(isinstance(n, int) for n in (low, high)) or not 0 <= low <= high or high < 1:
            raise ValueError(f"ReusePolicy.replicas must be an int >= 1 or (min, max), not {self.replicas!r}")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"ReusePolicy.concurrency must be an int >= 1, not {self.concurrency!r}")
        if self.idle_ttl_seconds < 0:
            raise ValueError(f"ReusePolicy.idle_ttl must not be negative, not {self.idle_ttl!r}")

    @property
    def max_replicas(self) -> int:
        # Workers start on demand, so a (min, max) range is honoured by its max.
        return self.replicas[1] if isinstance(self.replicas, tuple) else self.replicas

    @property
    def idle_ttl_seconds(self) -> float:
        ttl = self.idle_ttl
        return ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)


@dataclass
class TaskEnvironment:
    """Where and how a set of tasks runs (Flyte 2's `TaskEnvironment`).

    `secrets`, `depends_on`, `description`, `cache`, `interruptible` and
    `queue` are accepted so Flyte code runs; this platform does not act on them.
    """

    name: str
    image: str | Image = ""  # a reference, or an Image to build (fanout.build)
    resources: Resources | None = None
    env_vars: dict[str, str] = field(default_factory=dict)
    reusable: ReusePolicy | None = None
    secrets: Any = None
    depends_on: list[TaskEnvironment] = field(default_factory=list)
    description: str | None = None
    cache: Any = None
    interruptible: bool = False
    queue: str | None = None
    tasks: dict[str, Task[Any, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a TaskEnvironment needs a non-empty name, not {self.name!r}")
        if not isinstance(self.image, str | Image):
            raise TypeError(f"image must be a reference string or a fanout.Image, not {type(self.image).__name__}")
        if self.resources is not None and not isinstance(self.resources, Resources):
            raise TypeError(f"resources must be a Resources, not {type(self.resources).__name__}")
        if self.reusable is not None and not isinstance(self.reusable, ReusePolicy):
            raise TypeError(f"reusable must be a ReusePolicy, not {type(self.reusable).__name__}")
        self.env_vars = dict(self.env_vars or {})
        self.depends_on = list(self.depends_on or [])

    def task(
        self,
        fn: TaskFunction[P, R] | None = None,
        *,
        short_name: str | None = None,
        retries: int | RetryStrategy = 0,
        timeout: float | timedelta | Timeout | None = None,
        cache: Any = None,
        report: bool = False,
        **flyte_options: Any,
    ) -> Any:
        """Decorate a function (`async def` or plain `def`) as a task of this environment.

        `retries` and `timeout` are checked here: a wrong type is a TypeError now,
        not at run. `report=True` keeps what the task writes with fanout.report.
        Other Flyte options (docs, pod_template, ...) are accepted.
        """
        _only_flyte_options("task", flyte_options, FLYTE_TASK_OPTIONS)
        strategy = policies.retry_strategy(retries)
        limit = policies.timeout_policy(timeout)
        if not isinstance(report, bool):
            raise TypeError(f"report must be True or False, not {type(report).__name__}")

        def wrap(f: TaskFunction[P, R]) -> Task[P, R]:
            t = Task(self, f, retries=strategy, timeout=limit, short_name=short_name, report=report)
            self.tasks[t.short_name] = t
            return t

        return wrap(fn) if fn is not None else wrap

    def clone_with(self, name: str, **changes: Any) -> TaskEnvironment:
        """A new environment like this one, with `name` and the given fields changed; it has no tasks yet."""
        unknown = set(changes) - {f for f in self.__dataclass_fields__ if f not in ("name", "tasks")}
        if unknown:
            raise TypeError(f"clone_with() got unknown fields: {', '.join(sorted(unknown))}")
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ("name", "tasks")}
        fields.update({k: v for k, v in changes.items() if v is not None})
        return TaskEnvironment(name=name, **fields)


class Task(Generic[P, R]):
    def __init__(
        self,
        env: TaskEnvironment,
        fn: TaskFunction[P, R],
        retries: int | RetryStrategy = 0,
        timeout: float | timedelta | Timeout | None = None,
        short_name: str | None = None,
        resources: Resources | None = None,
        report: bool = False,
    ) -> None:
        if not callable(fn) or inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError(f"task {getattr(fn, '__qualname__', fn)!r} must be a function (async def or def)")
        self.env = env
        self.is_async = inspect.iscoroutinefunction(fn)
        self.fn = fn
        self.retry_strategy = policies.retry_strategy(retries)
        self.timeout = policies.timeout_policy(timeout)
        if resources is not None and not isinstance(resources, Resources):
            raise TypeError(f"resources must be a Resources, not {type(resources).__name__}")
        self.resources = resources or env.resources
        self.short_name = short_name or fn.__name__
        self.name = f"{env.name}.{self.short_name}"
        self.report = report  # its fanout.report is kept with its action
        self._ref = ""
        functools.update_wrapper(self, fn)

    @property
    def retries(self) -> int:
        return self.retry_strategy.count

    def override(
        self,
        *,
        retries: int | RetryStrategy | None = None,
        timeout: float | timedelta | Timeout | None = None,
        resources: Resources | None = None,
        short_name: str | None = None,
        **flyte_options: Any,
    ) -> Task[P, R]:
        """This task with other retries, timeout or resources, for the calls made through the copy.

        The copy keeps this task's reference, so a worker finds the same function.
        Other Flyte options (cache, env_vars, ...) are accepted and not acted on.
        """
        _only_flyte_options("override", flyte_options, FLYTE_OVERRIDE_OPTIONS)
        copy = Task(
            self.env,
            self.fn,
            retries=self.retry_strategy if retries is None else retries,
            timeout=self.timeout if timeout is None else timeout,
            short_name=short_name or self.short_name,
            resources=resources or self.resources,
            report=self.report,
        )
        copy._ref = self._ref
        return copy

    def forward(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """The function itself, called here (Flyte's task.forward): no action, no record, no container.

        An async task's forward returns the coroutine to await; a plain one's, the value."""
        return self.fn(*args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Flyte's awaitable form of a call, for async callers."""
        return await self(*args, **kwargs)

    @functools.cached_property
    def types(self) -> serialization.Types:
        """Its signature and annotations: what its inputs and result are sent and received as."""
        return serialization.Types.of(self.fn)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A TypeError naming the task when the arguments do not fit its signature."""
        try:
            inspect.signature(self.fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name}: {exc}") from None

    @property
    def ref(self) -> str:
        """Where the runtime finds this task again, in another process."""
        # Worked out once: a parent names and specs every child with it.
        if not self._ref:
            self._ref = self._find_ref()
        return self._ref

    def _find_ref(self) -> str:
        module = sys.modules.get(self.fn.__module__)
        if self.fn.__module__ == "__main__" or self.fn.__module__.startswith(FILE_MODULE_PREFIX):
            path = getattr(module, "__file__", None)
            if not path:
                raise TypeError(f"task {self.name} is defined interactively; define it in a file to run it remotely")
            # Inside a code bundle, relative to its root: the same reference in every worker.
            location = active.relative_to_active(path) or os.path.abspath(path)
            return f"file:{location}:{self.fn.__qualname__}"
        return f"module:{self.fn.__module__}:{self.fn.__qualname__}"

    def spec(self, name: str, inputs: bytes) -> pb.ActionSpec:
        s = pb.ActionSpec(
            name=name,
            task_name=self.name,
            task_ref=self.ref,
            image=self.env.image if isinstance(self.env.image, str) else self.env.image.uri,
            env=self.env.env_vars,
            retries=self.retry_strategy.count,
            timeout_seconds=self.timeout.runtime_seconds if self.timeout else 0,
            max_queued_seconds=self.timeout.queued_seconds if self.timeout else 0,
            inputs=inputs,
            environment=self.env.name,
            group=groups.current(),
            trace_parent=tracing.current_traceparent(),  # the caller's span: the child's action hangs under it
        )
        if self.retry_strategy.backoff is not None:
            s.backoff.CopyFrom(self.retry_strategy.backoff.to_proto())
        policy = self.env.reusable
        if policy is not None:
            s.reuse.replicas = policy.max_replicas
            s.reuse.concurrency = policy.concurrency
            s.reuse.idle_ttl_seconds = policy.idle_ttl_seconds
        if self.resources:
            s.resources.cpu = str(self.resources.cpu or "")
            s.resources.memory = str(self.resources.memory or "")
        return s

    async def invoke(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function as an action's body: a plain one in the loop's thread pool, never on the loop."""
        if self.is_async:
            return await self.fn(*args, **kwargs)  # type: ignore[misc]
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # the action's controller goes along into the thread
        context.run(_ACTION_LOOP.set, loop)
        fn: Callable[P, R] = self.fn  # type: ignore[assignment]
        return await loop.run_in_executor(None, functools.partial(context.run, fn, *args, **kwargs))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        active = controller.current()
        if active is None:
            return self.fn(*args, **kwargs)
        loop = _ACTION_LOOP.get()
        if loop is not None and not _on_loop(loop):
            # A plain task, in its thread: the child goes out on the action's loop, this thread waits.
            return asyncio.run_coroutine_threadsafe(active.call(self, args, kwargs), loop).result()
        return active.call(self, args, kwargs)

    def __repr__(self) -> str:
        return f"Task({self.name})"


def action_loop() -> asyncio.AbstractEventLoop | None:
    """In a plain task's thread: the event loop of the action it runs for (None elsewhere)."""
    return _ACTION_LOOP.get()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
