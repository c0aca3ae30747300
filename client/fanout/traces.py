"""`@fanout.trace` (Flyte 2's `@flyte.trace`): helper calls inside a task, checkpointed.

A traced async function called inside an action runs as a plain call (no
action, no container), and its output is recorded with the control plane
under a key made of the function's name and its encoded inputs. When the
action fails and runs again, its new attempt gets the recorded output of
each call it makes with the same inputs back without running the function
again: an expensive or non-deterministic step (an API call, a model call)
is done once. Calls that raised are not recorded: they run again.

Outside an action (a plain call, local mode) the function simply runs.

Records go out in batches: the calls finishing in one turn of the event loop,
across the action's concurrent calls (an asyncio.gather over a traced helper),
share one RecordTraces call. A traced call returns once its record is kept,
so a crash just after it loses nothing. A record the control plane refuses
(the run holds too many, say) is reported on stderr and the task goes on.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fanout import controller, errors, serialization
from fanout.client import AsyncClient
from fanout.task import FILE_MODULE_PREFIX
from fanout.v1 import actions_pb2 as pb

F = TypeVar("F", bound=Callable[..., Any])
# RecordTraces takes at most this many records, and bytes of outputs, per call (quota/traces.py).
MAX_RECORDS = 1000
MAX_BYTES_PER_CALL = 4 << 20


def trace(fn: F) -> F:
    """Checkpoint the calls of async `fn` inside tasks (see the module doc); a sync `fn` is returned as it is."""
    if not inspect.iscoroutinefunction(fn):
        return fn  # as on Flyte, a plain function runs plainly: only async calls are checkpointed
    # Its module too, unless that is a script or a file the runtime loaded by path (named for the path).
    plain = fn.__module__ == "__main__" or fn.__module__.startswith(FILE_MODULE_PREFIX)
    name = fn.__qualname__ if plain else f"{fn.__module__}.{fn.__qualname__}"
    types = serialization.Types.of(fn)

    @functools.wraps(fn)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        active = controller.current()
        if active is None:
            return await fn(*args, **kwargs)
        inputs = serialization.encode_inputs(name, args, kwargs, types)
        key = hashlib.sha256(name.encode() + b"\0" + inputs).hexdigest()[:40]
        book = active.traces
        recorded = await book.recorded(key)
        if recorded is not None:
            return serialization.decode_output(recorded.output, types)
        started = time.time()
        value = await fn(*args, **kwargs)
        output = serialization.encode_output(name, value, types)
        await book.record(
            pb.TraceRecord(key=key, name=name, output=output, started_at=started, duration=time.time() - started)
        )
        return value

    traced.__fanout_trace__ = True  # type: ignore[attr-defined]
    return traced  # type: ignore[return-value]


_Pending = tuple[pb.TraceRecord, "asyncio.Future[None]"]


class TraceBook:
    """One action attempt's traced calls: what earlier attempts recorded, and what this one records."""

    def __init__(self, client: AsyncClient, run: str, action: str, token: str, attempt: int) -> None:
        self._client = client
        self._run = run
        self._action = action
        self._token = token
        # A first attempt has nothing to replay: it never asks.
        self._recorded: dict[str, pb.TraceRecord] | None = {} if attempt <= 1 else None
        self._loading: asyncio.Lock = asyncio.Lock()
        self._pending: list[_Pending] = []
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    async def recorded(self, key: str) -> pb.TraceRecord | None:
        if self._recorded is None:
            async with self._loading:
                if self._recorded is None:
                    self._recorded = await self._load()
        return self._recorded.get(key)

    async def _load(self) -> dict[str, pb.TraceRecord]:
        found: dict[str, pb.TraceRecord] = {}
        cursor = ""
        while True:
            request = pb.ListTracesRequest(run=self._run, action=self._action, cursor=cursor)
            page = await self._client.call(self._client.actions.ListTraces, request, token=self._token)
            found.update((record.key, record) for record in page.records)
            cursor = page.next_cursor
            if not cursor:
                return found

    async def record(self, record: pb.TraceRecord) -> None:
        """Keep `record`; returns once the control plane has it (or refused it, which is reported)."""
        kept: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((record, kept))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # After every coroutine ready in this turn: the calls of one gather share a RecordTraces.
            asyncio.get_running_loop().call_soon(self._flush)
        await asyncio.shield(kept)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        for batch in _calls(pending):
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)  # a reference, so it is not collected mid-flight
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        request = pb.RecordTracesRequest(run=self._run, action=self._action, records=[r for r, _ in batch])
        try:
            await self._client.call(self._client.actions.RecordTraces, request, token=self._token)
        except errors.FanoutError as exc:
            names = sorted({record.name for record, _ in batch})
            print(f"fanout: traced calls of {', '.join(names)} not recorded: {exc}", file=sys.stderr)
        finally:
            for _, kept in batch:
                if not kept.done():
                    kept.set_result(None)


def _calls(pending: list[_Pending]) -> list[list[_Pending]]:
    """`pending` cut into calls of at most MAX_RECORDS records and MAX_BYTES_PER_CALL bytes of outputs
    (a record bigger than that goes alone)."""
    calls: list[list[_Pending]] = []
    size = 0
    for item in pending:
        grows = len(item[0].output)
        if not calls or len(calls[-1]) >= MAX_RECORDS or (size + grows > MAX_BYTES_PER_CALL and calls[-1]):
            calls.append([])
            size = 0
        calls[-1].append(item)
        size += grows
    return calls
