"""A worker: `python -m fanout.dispatch.worker`, the process that runs actions of one task environment.

Reusable: a dispatcher starts it for one pool (a tenant's environment with a
ReusePolicy) and sends it actions; it runs each as an asyncio task (a plain
`def` task in the worker's thread pool, see Task.invoke), all on one gRPC
channel (one AsyncClient shared by every action's controller, each call
carrying that action's own token). It never holds a token of its own: the
dispatcher starts it with a clean environment, and each action's token
reaches only that action's controller.

One-shot (`--one-shot`, or `run_one_shot()` in a child of the fork server):
the process backend's worker for one action of an environment without a
ReusePolicy. The action comes in the environment (ENV_*: its spec in a file,
its token in FANOUT_TOKEN); the worker runs it the same way, writes its
ActionResult to the result file (whole or absent: a temporary file renamed)
and exits. The file is what the dispatcher reports, and what a restarted
dispatcher finds if it died before reporting (see workdirs.py). Timeouts and
aborts are the dispatcher's: it stops the process tree.

Output: stdout and stderr (fd 1 and 2, shared by every action and whatever
they start) go to the log file the dispatcher opened, appended. A keeper
thread bounds it: past LOG_LIMIT_BYTES it is cut to its last LOG_KEEP_BYTES
(a few bytes written during the cut may be lost), so a long-lived worker's
log never grows without limit.

Protocol: fanout.v1 ToWorker frames on stdin, FromWorker frames on stdout
(see worker.proto and frames.py); or, with `--connect HOST:PORT` (a
container's worker), the same frames on a TCP connection it opens to the
dispatcher's worker listener, after a WorkerHello with the slot id and key
the dispatcher put in its environment (ENV_WORKER_ID, ENV_WORKER_KEY). The first frame out says it is ready.
Outcomes finished in one turn of the event loop go out in one frame; so do
the actions of one frame still running after their first step (`running`:
what the dispatcher reports RUNNING; a no-op, done in its first step, never
is). A cancel answers ABORTED (the dispatcher reports nothing) or TIMED_OUT. The
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
import io
import os
import stat
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fanout import config, gc_tuning, memory, output, runtime, tracing
from fanout.client import AsyncClient
from fanout.dispatch import become_user, event_loop
from fanout.dispatch.frames import frame, read_frame
from fanout.hub import Hub
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import worker_pb2 as wpb

DEFAULT_MAX_OUTPUT = 1 << 20
# What a dispatcher sets for a worker: how many actions it may send at once (sizes the thread pool).
ENV_CONCURRENCY = "FANOUT_WORKER_CONCURRENCY"
# Threads beyond the concurrency: plain tasks blocked on their children hold a thread but give their slot back.
SPARE_THREADS = 32
# A one-shot worker's action, set by the process backend.
ENV_RUN = "FANOUT_RUN"
ENV_ACTION = "FANOUT_ACTION"
ENV_ATTEMPT = "FANOUT_ATTEMPT"
ENV_SPEC_PATH = "FANOUT_SPEC_PATH"
ENV_RESULT_PATH = "FANOUT_RESULT_PATH"
# The tenant's max_payload_bytes, from the lease: a bigger result fails the
# action here, with a clear error, instead of being refused on report.
ENV_MAX_OUTPUT = "FANOUT_MAX_OUTPUT_BYTES"
# A dialling worker's slot and its key (see worker_listener.py), read and removed from the environment at start.
ENV_WORKER_ID = "FANOUT_WORKER_ID"
ENV_WORKER_KEY = "FANOUT_WORKER_KEY"
# The log bound: cut to the last LOG_KEEP_BYTES once past LOG_LIMIT_BYTES, checked every LOG_CHECK_SECONDS.
LOG_KEEP_BYTES = 64 * 1024
LOG_LIMIT_BYTES = 2 * LOG_KEEP_BYTES
LOG_CHECK_SECONDS = 0.2

Key = tuple[str, str, int]  # run, action name, attempt
Send = Callable[[list[wpb.WorkerOutcome]], None]
TellRunning = Callable[[list[wpb.WorkerAction]], None]


class Worker:
    def __init__(self, client: AsyncClient, send: Send, tell_running: TellRunning | None = None) -> None:
        self._client = client
        self._send = send
        self._tell_running = tell_running
        self._tasks: dict[Key, asyncio.Task[pb.ActionResult]] = {}
        self._timed_out: set[Key] = set()
        self._finished: list[wpb.WorkerOutcome] = []
        self._flush_scheduled = False

    def handle(self, message: wpb.ToWorker) -> None:
        started: list[Key] = []
        for action in message.run:
            key = (action.run, action.spec.name, action.attempt)
            if key not in self._tasks:  # a repeated frame must not run an action twice
                task = asyncio.create_task(self._run(action))
                # A callback, not a `finally` in _run: a task cancelled before its first step runs none of it.
                task.add_done_callback(functools.partial(self._done, key, action.spec.timeout_seconds))
                self._tasks[key] = task
                started.append(key)
        if started and self._tell_running is not None:
            # Scheduled after the tasks' first steps, which run in the next turn of the loop in order.
            asyncio.get_running_loop().call_soon(self._still_running, started)
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
        return await runtime.run_task(
            self._client, spec, action.run, spec.name, max_output, token=action.action_token, attempt=action.attempt
        )

    def _still_running(self, started: list[Key]) -> None:
        running = [k for k in started if (task := self._tasks.get(k)) is not None and not task.done()]
        if running and self._tell_running is not None:
            self._tell_running([wpb.WorkerAction(run=k[0], name=k[1], attempt=k[2]) for k in running])

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
        if done:
            self._send(done)

    def task(self, key: Key) -> asyncio.Task[pb.ActionResult] | None:
        return self._tasks.get(key)

    async def stop(self) -> None:
        """Cancel what still runs, unreported: the dispatcher is gone or stopped us."""
        Hub.of(self._client).detach()  # they run again elsewhere and want their children kept
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
    await serve_stream(reader, writer)


async def serve_connected(address: str) -> None:
    """Dial the dispatcher (a container's worker), claim our slot with its key, then serve as usual."""
    worker_id, key = os.environ.pop(ENV_WORKER_ID, ""), os.environ.pop(ENV_WORKER_KEY, "")
    if not worker_id or not key:
        raise SystemExit(f"fanout worker --connect needs {ENV_WORKER_ID} and {ENV_WORKER_KEY} in its environment")
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), limit=1 << 20)
    writer.write(frame(wpb.FromWorker(hello=wpb.WorkerHello(worker_id=worker_id, key=key)).SerializeToString()))
    await serve_stream(reader, writer)


async def serve_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Tokens per call: this process has none of its own (FANOUT_CONFIG is /dev/null, no FANOUT_TOKEN).
    client = AsyncClient(config.load(), tokens_per_call=True)

    def send(done: list[wpb.WorkerOutcome]) -> None:
        if not writer.is_closing():
            writer.write(frame(wpb.FromWorker(finished=done).SerializeToString()))

    def tell_running(running: list[wpb.WorkerAction]) -> None:
        if not writer.is_closing():
            writer.write(frame(wpb.FromWorker(running=running).SerializeToString()))

    worker = Worker(client, send, tell_running)
    ready = wpb.WorkerReady(pid=os.getpid(), tells_running=True)
    writer.write(frame(wpb.FromWorker(ready=ready).SerializeToString()))
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
        await close_client(client)


def run_one_shot() -> int:
    """Run the one action the environment names, write its result file; the process's exit code.

    A task that calls sys.exit() ends the process with that code and writes
    no result, as a process of its own would.
    """
    # Exec'd as root, it becomes its tenant's user first: its folder (and the spec in it) is the tenant's.
    become_user.become_from_env()
    spec = pb.ActionSpec.FromString(Path(os.environ[ENV_SPEC_PATH]).read_bytes())
    memory.limit_this_process(spec.resources.memory)  # past it, the task gets MemoryError (OOMError upstream)
    action = dpb.LeasedAction(
        run=os.environ[ENV_RUN],
        spec=spec,
        attempt=int(os.environ.get(ENV_ATTEMPT, "1")),
        action_token=os.environ.get("FANOUT_TOKEN", ""),
        max_payload_bytes=int(os.environ.get(ENV_MAX_OUTPUT, DEFAULT_MAX_OUTPUT)),
    )
    line_buffered_output()
    tracing.setup("fanout-worker")
    try:
        outcome = asyncio.run(one_shot(action, config.load()))
    finally:
        tracing.flush()  # the process ends right after: nothing buffered may stay behind
    if isinstance(outcome, SystemExit):
        raise outcome
    out = Path(os.environ[ENV_RESULT_PATH])
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(outcome.result.SerializeToString())
    tmp.replace(out)  # atomic: the dispatcher never reads half a result
    return 0


async def one_shot(action: dpb.LeasedAction, client_config: config.ClientConfig) -> wpb.WorkerOutcome | SystemExit:
    """Run one action as a one-shot worker does; its outcome, or the SystemExit its task raised."""
    client = AsyncClient(client_config, tokens_per_call=True)
    loop = asyncio.get_running_loop()
    # Most one-shot actions are over sooner: they pay nothing for the keeper.
    loop.call_later(LOG_CHECK_SECONDS, start_log_keeper)
    finished: asyncio.Future[wpb.WorkerOutcome] = loop.create_future()
    worker = Worker(client, lambda done: finished.set_result(done[0]))
    try:
        worker.handle(wpb.ToWorker(run=[action]))
        task = worker.task((action.run, action.spec.name, action.attempt))
        outcome = await finished
        assert task is not None
        exc = task.exception()
        return exc if isinstance(exc, SystemExit) else outcome
    finally:
        await close_client(client)


async def close_client(client: AsyncClient) -> None:
    """The parents' shared watch stream and submissions first, then the channel they run on."""
    await Hub.of(client).close()
    await client.close()


def line_buffered_output() -> None:
    """A task's prints reach the log in order with its errors, and are there if the process is killed;
    each action's are also kept for it (fanout.output), however many actions share this worker."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True)
    output.install()


def start_log_keeper() -> None:
    """Start the keeper thread if stderr is a regular file (the log): see the module doc."""
    try:
        if not stat.S_ISREG(os.fstat(2).st_mode):
            return
        # A description of our own, without O_APPEND: pwrite at offset 0 must not append.
        fd = os.open(f"/proc/self/fd/{2}", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    threading.Thread(target=_keep_log, args=(fd,), name="fanout-log-keeper", daemon=True).start()


def _keep_log(fd: int) -> None:
    stop = threading.Event()
    while not stop.wait(LOG_CHECK_SECONDS):
        with contextlib.suppress(OSError):
            cut_to_tail(fd, LOG_LIMIT_BYTES, LOG_KEEP_BYTES)


def cut_to_tail(fd: int, limit: int, keep: int) -> None:
    """If the file is over `limit` bytes, leave only its last `keep` (writers appending go on at its end)."""
    size = os.fstat(fd).st_size
    if size <= limit:
        return
    tail = os.pread(fd, keep, size - keep)
    os.pwrite(fd, tail, 0)
    os.ftruncate(fd, len(tail))


def _worker_threads() -> ThreadPoolExecutor:
    concurrency = int(os.environ.get(ENV_CONCURRENCY, "1") or 1)
    # Threads start as plain tasks need them: a large bound costs nothing until used.
    return ThreadPoolExecutor(max_workers=concurrency + SPARE_THREADS, thread_name_prefix="fanout-task")


async def _serve_with_threads(requests: int, replies: int) -> None:
    asyncio.get_running_loop().set_default_executor(_worker_threads())
    await serve(requests, replies)


async def _serve_connected_with_threads(address: str) -> None:
    asyncio.get_running_loop().set_default_executor(_worker_threads())
    await serve_connected(address)


def main() -> None:
    if sys.argv[1:] == ["--one-shot"]:
        sys.exit(run_one_shot())
    if sys.argv[1:2] == ["--connect"] and len(sys.argv) == 3:
        # A container's worker: frames on a connection to the dispatcher, output on stdout/stderr (the container's log).
        line_buffered_output()
        tracing.setup("fanout-worker")
        gc_tuning.tune_for_throughput()
        try:
            event_loop.run(_serve_connected_with_threads(sys.argv[2]))
        finally:
            tracing.flush()
        return
    # Before the first frame: no tenant code has run yet (see become_user.py).
    become_user.become_from_env(os.environ.pop(become_user.ENV_MEMORY, ""))
    # Keep the protocol off fds 0 and 1, so a task's print or input() cannot corrupt it.
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    line_buffered_output()
    start_log_keeper()
    tracing.setup("fanout-worker")
    gc_tuning.tune_for_throughput()
    try:
        event_loop.run(_serve_with_threads(requests, replies))
    finally:
        tracing.flush()


if __name__ == "__main__":
    main()
