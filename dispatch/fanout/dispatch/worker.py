"""A reusable worker: `python -m fanout.dispatch.worker`, one long-lived process running many actions.

A dispatcher starts it for one pool (a tenant's environment with a
ReusePolicy) and sends it actions; it runs each as an asyncio task, all on
one gRPC channel (one AsyncClient shared by every action's controller, each
call carrying that action's own token). It never holds a token of its own:
the dispatcher starts it with a clean environment, and each action's token
reaches only that action's controller.

Protocol: fanout.v1 ToWorker frames on stdin, FromWorker frames on stdout
(see worker.proto and frames.py). The first frame out says it is ready.
Outcomes finished in one turn of the event loop go out in one frame. A
cancel answers ABORTED (the dispatcher reports nothing) or TIMED_OUT. The
worker does not bound its own concurrency: the dispatcher sends it no more
than the pool's `concurrency` at once. At the end of stdin (the dispatcher
stopped it, or died) it cancels what still runs, reports nothing and exits:
those actions' leases lapse and they run again.

Only what the runtime needs is imported here, since tenant code shares the
process: fanout.runtime (client, controller, task) and the generated protos.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import traceback

from fanout import config, runtime
from fanout.client import AsyncClient
from fanout.dispatch.frames import frame, read_frame
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import worker_pb2 as wpb

DEFAULT_MAX_OUTPUT = 1 << 20

Key = tuple[str, str, int]  # run, action name, attempt


class Worker:
    def __init__(self, client: AsyncClient, writer: asyncio.StreamWriter) -> None:
        self._client = client
        self._writer = writer
        self._tasks: dict[Key, asyncio.Task[pb.ActionResult]] = {}
        self._timed_out: set[Key] = set()
        self._finished: list[wpb.WorkerOutcome] = []
        self._flush_scheduled = False

    def handle(self, message: wpb.ToWorker) -> None:
        for action in message.run:
            key = (action.run, action.spec.name, action.attempt)
            if key not in self._tasks:  # a repeated frame must not run an action twice
                task = asyncio.create_task(self._run(action))
                # A callback, not a `finally` in _run: a task cancelled before its first step runs none of it.
                task.add_done_callback(functools.partial(self._done, key, action.spec.timeout_seconds))
                self._tasks[key] = task
        for cancel in message.cancel:
            key = (cancel.run, cancel.name, cancel.attempt)
            running = self._tasks.get(key)
            if running is not None:
                if cancel.timed_out:
                    self._timed_out.add(key)
                running.cancel()

    async def _run(self, action: dpb.LeasedAction) -> pb.ActionResult:
        spec = action.spec
        if spec.workdir and spec.workdir not in sys.path:
            sys.path.insert(0, spec.workdir)  # what `python -m fanout.runtime` started there would see
        max_output = action.max_payload_bytes or DEFAULT_MAX_OUTPUT
        return await runtime.run_task(self._client, spec, action.run, spec.name, max_output, token=action.action_token)

    def _done(self, key: Key, timeout: int, task: asyncio.Task[pb.ActionResult]) -> None:
        del self._tasks[key]
        if key in self._timed_out:
            self._timed_out.discard(key)
            error = pb.ActionError(type="Timeout", message=f"the action ran longer than {timeout}s")
            result, phase = pb.ActionResult(error=error), pb.TIMED_OUT
        elif task.cancelled():
            result, phase = pb.ActionResult(), pb.ABORTED
        elif (exc := task.exception()) is not None:  # SystemExit or KeyboardInterrupt fails the task, not the worker
            tb = "".join(traceback.format_exception(exc))
            result, phase = (
                pb.ActionResult(error=pb.ActionError(type=type(exc).__name__, message=str(exc), traceback=tb)),
                pb.FAILED,
            )
        else:
            result = task.result()
            phase = pb.FAILED if result.HasField("error") else pb.SUCCEEDED
        self._finished.append(wpb.WorkerOutcome(run=key[0], name=key[1], attempt=key[2], phase=phase, result=result))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # After every task already scheduled in this turn: those finishing together share a frame.
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        done, self._finished = self._finished, []
        if done and not self._writer.is_closing():
            self._writer.write(frame(wpb.FromWorker(finished=done).SerializeToString()))

    async def stop(self) -> None:
        """Cancel what still runs, unreported: the dispatcher is gone or stopped us."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve(requests: int, replies: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(requests, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(replies, "wb", 0))
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    # Tokens per call: this process has none of its own (FANOUT_CONFIG is /dev/null, no FANOUT_TOKEN).
    client = AsyncClient(config.load(), tokens_per_call=True)
    worker = Worker(client, writer)
    writer.write(frame(wpb.FromWorker(ready=wpb.WorkerReady(pid=os.getpid())).SerializeToString()))
    try:
        while True:
            try:
                body = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            worker.handle(wpb.ToWorker.FromString(body))
    finally:
        await worker.stop()
        with contextlib.suppress(Exception):
            await writer.drain()
        await client.close()


def main() -> None:
    # Keep the protocol off fds 0 and 1, so a task's print or input() cannot corrupt it.
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    asyncio.run(serve(requests, replies))


if __name__ == "__main__":
    main()
