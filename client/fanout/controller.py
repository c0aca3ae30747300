"""Inside a running action: turn task calls into child actions.

Calls made in one turn of the event loop go out as one SubmitBatch; one
watch stream per parent (replay, then live updates, resumed by cursor after
a disconnect) wakes the awaiting coroutines. Child names are deterministic,
so a retried parent finds its earlier children instead of charging new ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from fanout import errors, serialization
from fanout.client import TERMINAL_PHASES, AsyncClient
from fanout.v1 import actions_pb2 as pb

if TYPE_CHECKING:
    from fanout.task import Task

log = logging.getLogger(__name__)

_CURRENT: ContextVar[Controller | None] = ContextVar("fanout_controller", default=None)
MAX_BATCH = 10_000
# Well under the server's default max_batch_bytes (64 MiB), so big inputs split instead of being refused.
MAX_BATCH_BYTES = 16 << 20
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# How the server names one action of a refused SubmitBatch (google.rpc.BadRequest field).
_ACTION_FIELD = re.compile(r"actions\[(\d+)\]")


def current() -> Controller | None:
    return _CURRENT.get()


def child_name(parent: str, task_ref: str, inputs: bytes, seq: int) -> str:
    digest = hashlib.sha256(f"{parent}\0{task_ref}\0{seq}\0".encode() + inputs).hexdigest()[:20]
    short = _NAME_UNSAFE.sub("-", task_ref.rsplit(":", 1)[-1].rsplit(".", 1)[-1])[:40].strip("-_") or "task"
    return f"{short}-{digest}"


class Controller:
    def __init__(self, client: AsyncClient, run: str, parent: str, workdir: str = "", token: str | None = None) -> None:
        self.client = client
        self.run = run
        self.parent = parent
        self.workdir = workdir
        # The parent action's own token, when the client is shared by a worker's actions.
        self.token = token
        self._seq = 0
        self._pending: list[pb.ActionSpec] = []
        self._waiting: dict[str, asyncio.Future[pb.ActionStatus]] = {}
        self._finished: dict[str, pb.ActionStatus] = {}
        self._cursor = ""
        self._watch: asyncio.Task[None] | None = None
        self._flush_scheduled = False
        self._submissions: set[asyncio.Future[None]] = set()

    def activate(self) -> None:
        _CURRENT.set(self)

    async def call(self, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._seq += 1
        inputs = serialization.encode_inputs(task.name, args, kwargs)
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
                spec = task.spec(name, inputs)
                spec.workdir = self.workdir
                self._pending.append(spec)
                self._schedule_flush()
            self._ensure_watch()
            status = await asyncio.shield(future)
        return _outcome(status)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # call_soon runs after every coroutine already scheduled in this
            # turn, so all calls of one asyncio.gather share one batch.
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        for chunk in _chunks(batch):
            task = asyncio.ensure_future(self._submit(chunk))
            self._submissions.add(task)  # a reference, so the task is not collected mid-flight
            task.add_done_callback(self._submissions.discard)

    async def _submit(self, batch: list[pb.ActionSpec]) -> None:
        delay = 0.1
        while True:
            try:
                await self.client.submit_batch(self.run, self.parent, batch, token=self.token)
                return
            except errors.FanoutLimitExceeded as exc:
                self._fail([s.name for s in batch], exc)
                return
            except errors.QuotaExceeded as exc:  # max_queued: wait for room, do not fail the run
                wait = exc.retry_after or delay
                log.info("queue full (%s); retrying %d actions in %.1fs", exc, len(batch), wait)
                await asyncio.sleep(wait)
            except errors.Unavailable as exc:
                log.warning("control plane unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except errors.InvalidRequest as exc:
                bad = _refused_actions(batch, exc)
                if not bad:  # the batch as a whole was refused
                    self._fail([s.name for s in batch], exc)
                    return
                for name, reason in bad.items():
                    self._fail([name], errors.InvalidRequest(reason, exc.violations))
                # The others were refused only with their siblings: send them again at once.
                batch = [s for s in batch if s.name not in bad]
                if not batch:
                    return
            except errors.FanoutError as exc:
                self._fail([s.name for s in batch], exc)
                return

    def _fail(self, names: list[str], exc: Exception) -> None:
        for name in names:
            future = self._waiting.pop(name, None)
            if future is not None and not future.done():
                future.set_exception(exc)

    def _ensure_watch(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        delay = 0.1
        while self._waiting:
            try:
                # A watch restarted after a lull resumes from the last cursor: only the first one
                # replays (for a rerun parent), so a long map costs no replay of every child per lull.
                watch = self.client.watch_children(self.run, self.parent, self._cursor, token=self.token, batched=True)
                async for event in watch:
                    delay = 0.1
                    for status in event.updates:  # every change one read returned, in one message
                        self._settle(status)
                    if event.HasField("replay_done") or self._cursor:
                        self._cursor = event.cursor
                    if not self._waiting:
                        return
            except errors.Unavailable as exc:
                log.warning("watch interrupted (%s); resuming in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except errors.FanoutError as exc:
                # Refused (revoked token, run gone): no retry will help, and a
                # waiter must not hang on a watch that will never report.
                self._fail(list(self._waiting), exc)
                return

    def _settle(self, status: pb.ActionStatus) -> None:
        if status.phase not in TERMINAL_PHASES:
            return
        future = self._waiting.pop(status.name, None)
        if future is not None and not future.done():
            future.set_result(status)
        else:
            # Kept only until its call comes: memory follows the children not yet awaited, so a
            # bounded fanout.map over a long input stays bounded.
            self._finished[status.name] = status

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)


def _chunks(specs: list[pb.ActionSpec]) -> list[list[pb.ActionSpec]]:
    """The calls of one turn, in SubmitBatch-sized pieces: at most MAX_BATCH actions and MAX_BATCH_BYTES each."""
    chunks: list[list[pb.ActionSpec]] = []
    size = 0
    for spec in specs:
        spec_size = spec.ByteSize()
        if not chunks or len(chunks[-1]) >= MAX_BATCH or size + spec_size > MAX_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(spec)
        size += spec_size
    return chunks


def _refused_actions(batch: list[pb.ActionSpec], exc: errors.InvalidRequest) -> dict[str, str]:
    """Name -> reason for each action of the batch the server named as invalid."""
    bad: dict[str, str] = {}
    for field, description in exc.violations:
        match = _ACTION_FIELD.match(field)
        if match and int(match[1]) < len(batch):
            bad.setdefault(batch[int(match[1])].name, description)
    return bad


def _outcome(status: pb.ActionStatus) -> Any:
    if status.phase == pb.SUCCEEDED:
        return serialization.decode_output(status.result.outputs)
    err = status.result.error
    raise errors.action_failed(
        status.name, pb.Phase.Name(status.phase), err.type or "Error", err.message, err.traceback
    )
