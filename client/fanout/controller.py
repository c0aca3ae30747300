"""Inside a running action: turn task calls into child actions.

Calls made in one turn of the event loop go out in one batch, and the
children's events come back on one watch stream, both shared with every
other parent on the same client (a worker's): see hub.py. Child names are
deterministic, so a retried parent finds its earlier children instead of
charging new ones.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from fanout import errors, groups, serialization, tracing
from fanout.client import TERMINAL_PHASES, AsyncClient
from fanout.hub import Child, Hub
from fanout.v1 import actions_pb2 as pb

if TYPE_CHECKING:
    from fanout.task import Task
    from fanout.traces import TraceBook

_CURRENT: ContextVar[Controller | None] = ContextVar("fanout_controller", default=None)
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# Child spec templates one parent keeps (see Controller._template): a few per task it calls.
MAX_TEMPLATES = 64


def current() -> Controller | None:
    return _CURRENT.get()


def child_name(parent: str, task_ref: str, inputs: bytes, seq: int) -> str:
    digest = hashlib.sha256(f"{parent}\0{task_ref}\0{seq}\0".encode() + inputs).hexdigest()[:20]
    return f"{_short_name(task_ref)}-{digest}"


@functools.lru_cache(maxsize=1024)
def _short_name(task_ref: str) -> str:
    """The readable part of a child's name: its function's name, made safe (the same for every call)."""
    return _NAME_UNSAFE.sub("-", task_ref.rsplit(":", 1)[-1].rsplit(".", 1)[-1])[:40].strip("-_") or "task"


class Controller:
    def __init__(
        self,
        client: AsyncClient,
        run: str,
        parent: str,
        workdir: str = "",
        token: str | None = None,
        bundle: pb.CodeBundle | None = None,
        attempt: int = 1,
    ) -> None:
        self.run = run
        self.attempt = attempt
        self.parent = parent
        self.workdir = workdir
        # The parent's code bundle: its children run the same code.
        self.bundle = bundle
        # The parent action's own token, when the client is shared by a worker's actions.
        self.token = token
        self._client = client
        self._hub = Hub.of(client)
        self._seq = 0
        self._waiting: dict[str, asyncio.Future[pb.ActionStatus]] = {}
        self._finished: dict[str, pb.ActionStatus] = {}
        # Children whose await was cancelled: aborted on the server, their outcome no longer wanted.
        self._abandoned: set[str] = set()
        self._traces: TraceBook | None = None
        # Per task (and the group and trace its calls are made in): the spec its children share.
        self._templates: dict[tuple[Task[Any, Any], str, str], tuple[pb.ActionSpec, int]] = {}

    @property
    def traces(self) -> TraceBook:
        """This attempt's traced calls (@fanout.trace), made on first use."""
        if self._traces is None:
            from fanout.traces import TraceBook  # traces imports this module

            self._traces = TraceBook(self._client, self.run, self.parent, self.credential, self.attempt)
        return self._traces

    @property
    def credential(self) -> str:
        """The token that acts for this parent: its own, or the client's (a one-action process)."""
        return self.token or self._client.config.token or ""

    def activate(self) -> None:
        _CURRENT.set(self)

    async def call(self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._seq += 1
        inputs = serialization.encode_inputs(task.name, args, kwargs, task.types)
        name = child_name(self.parent, task.ref, inputs, self._seq)
        # A status the watch brought before this call (a rerun parent's replay) is used once, then dropped.
        status_or_none = self._finished.pop(name, None)
        if status_or_none is not None:
            status = status_or_none
        else:
            future = self._waiting.get(name)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._waiting[name] = future
                self._submit(task, name, inputs)
            # Not kept while the child runs: a pending child holds its frame, a million of them at once.
            del inputs
            # Followed from the first await until the parent finishes: later awaits resume from the cursor.
            self._hub.watch(self)
            try:
                # Awaited directly, not shielded (a shield per child costs a future and two callbacks):
                # this call is its only awaiter, so a cancel that reaches it cancels the future too.
                status = await future
            except asyncio.CancelledError:
                # Nobody awaits this child any more (task.cancel(), a cancelled gather or TaskGroup,
                # a timeout): abort it and its descendants on the server now, not when the root ends.
                if future.cancelled():
                    self._abandon(name)
                raise
        return _outcome(status, task)

    def _submit(self, task: Task[Any, Any], name: str, inputs: bytes) -> None:
        self._hub.submit(self, [Child(name, inputs, *self._template(task))])

    def _template(self, task: Task[Any, Any]) -> tuple[pb.ActionSpec, int]:
        """The spec of `task`'s children called here but for their names and inputs, and its size.

        Made at the first such call: its children are put together from it as their call is built
        (hub.py), not spec by spec in the turn that calls them.
        """
        key = (task, groups.current(), tracing.current_traceparent())
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= MAX_TEMPLATES:  # e.g. a span per call: each its own template
                self._templates.clear()
            spec = task.spec("", b"")
            spec.workdir = self.workdir
            if self.bundle is not None:
                spec.bundle.CopyFrom(self.bundle)
            template = self._templates[key] = (spec, spec.ByteSize())
        return template

    def _abandon(self, name: str) -> None:
        self._waiting.pop(name, None)
        # Its end will still come on the watch, unless it was never sent: then nothing comes.
        self._abandoned.update(self._hub.abort(self, [name]))

    def settle(self, status: pb.ActionStatus) -> None:
        if status.phase not in TERMINAL_PHASES:
            return
        if status.name in self._abandoned:
            self._abandoned.discard(status.name)
            return
        future = self._waiting.pop(status.name, None)
        if future is not None and not future.done():
            future.set_result(status)
        else:
            # Kept only until its call comes: memory follows the children not yet awaited, so a
            # bounded fanout.map over a long input stays bounded.
            self._finished[status.name] = status

    def fail(self, names: list[str], exc: Exception) -> None:
        for name in names:
            future = self._waiting.pop(name, None)
            if future is not None and not future.done():
                future.set_exception(exc)

    def fail_waiting(self, exc: Exception) -> None:
        """The watch was refused (revoked token, run gone): no waiter may hang on it."""
        self.fail(list(self._waiting), exc)

    async def close(self) -> None:
        """The parent is done: children still unfinished (e.g. siblings of a gather's first failure,
        which plain asyncio.gather leaves running) are aborted with their descendants, then unwatched."""
        unfinished = [name for name, future in self._waiting.items() if not future.done()]
        self._waiting.clear()
        if unfinished:
            await self._hub.abort_now(self, unfinished)
        self._hub.unwatch(self)


def _outcome(status: pb.ActionStatus, task: Task[Any, Any]) -> Any:
    if status.phase == pb.SUCCEEDED:
        return serialization.decode_output(status.result.outputs, task.types)
    err = status.result.error
    raise errors.action_failed(
        status.name, pb.Phase.Name(status.phase), err.type or "Error", err.message, err.traceback
    )
