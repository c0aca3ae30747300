"""A fork server ("zygote") that starts one-shot workers without a new interpreter.

Starting `python -m fanout.dispatch.worker --one-shot` costs about 0.2 s of
CPU, nearly all of it importing grpc, protobuf and fanout. The zygote imports
the worker once and then forks one child per action. It never creates a gRPC
channel or an event loop, so the children inherit no gRPC state and build
their own, as a fresh process would (importing grpc alone starts no threads
and opens no files). The zygote starts with a worker's essentials only
(worker_env.base_env): nothing of the dispatcher's environment, its token
above all, is in a child's memory or its /proc/self/environ.

A child is what `python -m fanout.dispatch.worker --one-shot` would be if
started with the requested cwd, environment and log file: the leader of its
own session and process group (so a timeout or shutdown can killpg it),
stdin from /dev/null, stdout and stderr appended to the log, no other open
files, the signal handlers of a fresh interpreter. It leaves with
`os._exit(run_one_shot())`: 1 and a traceback in the log if that raises, the
code of a SystemExit. Unlike a fresh interpreter it does not wait for
non-daemon threads or run exit handlers, and anything read at start-up keeps
the zygote's value; actions whose environment changes such variables must
be exec'd (see needs_exec).

Protocol, on the zygote's stdin and stdout: frames of a 4-byte big-endian
length and a JSON object.

    zygote  -> {"ready": true}                                 once, after the imports
    backend -> {"id": 7, "env": {...}, "cwd": "/w", "log": "/w/output.log", "uid": 200001, "gid": 200001}
    zygote  -> {"id": 7, "pid": 1234}  or  {"id": 7, "error": "fork: ..."}
    zygote  -> {"pid": 1234, "exit": 0}                        when reaped; -N if killed by signal N

With "uid" and "gid" (a zygote started as root), the child becomes that
user, without supplementary groups, right after opening its log (its own,
chowned to it) and before it changes to its directory or runs anything.

A child's pid always comes before its exit (one thread writes both). The
zygote exits when its stdin closes. If it dies, every pending spawn() and
wait() raises ForkServerError.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from fanout.dispatch import become_user, warm_up, worker
from fanout.dispatch.sandbox import Identity
from fanout.dispatch.untrusted_files import open_untrusted
from fanout.dispatch.worker_env import base_env
from fanout.server.parent_death import die_with_parent

START_TIMEOUT = 60.0
CLOSE_TIMEOUT = 10.0
# Read when the interpreter, the dynamic linker or grpc's C core start (grpc at
# import), so a forked child would silently ignore new values of these.
STARTUP_VARIABLES = ("PYTHON", "LD_", "GRPC_")

Message = dict[str, Any]


class ForkServerError(RuntimeError):
    """The fork server did not start, or it died."""


def needs_exec(env_changes: Mapping[str, str]) -> bool:
    """Whether an action setting these variables must start as a new process."""
    return any(name.startswith(STARTUP_VARIABLES) for name in env_changes)


class ForkedProcess:
    """A child of the fork server: the part of asyncio.subprocess.Process the backend uses."""

    def __init__(self, pid: int, exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self._exited = exited

    async def wait(self) -> int:
        # Shielded: a cancelled wait (a timeout) must not cancel the status later waits need.
        return await asyncio.shield(self._exited)


class ForkServer:
    """The dispatcher's handle on one zygote process."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._spawns: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        # The reader runs until the zygote has exited and every pending call has failed.
        return self._reader is not None and not self._reader.done()

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=base_env(),
            start_new_session=True,  # out of the dispatcher's group: a terminal's Ctrl-C is the dispatcher's to handle
        )
        assert self._proc.stdout is not None
        try:
            await asyncio.wait_for(_read_frame(self._proc.stdout), START_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            await self._stop()
            raise ForkServerError(
                f"the fork server did not start (exit code {self._proc.returncode}); its stderr says why"
            ) from exc
        self._reader = asyncio.create_task(self._read(self._proc.stdout))

    async def spawn(
        self, env: Mapping[str, str], cwd: str | Path, log_path: str | Path, identity: Identity | None = None
    ) -> ForkedProcess:
        """Fork a child running worker.run_one_shot(), as `identity` if given; OSError if the fork fails."""
        if not self.alive:
            raise ForkServerError("the fork server is not running")
        assert self._proc is not None and self._proc.stdin is not None
        request_id = next(self._ids)
        spawned = asyncio.get_running_loop().create_future()
        self._spawns[request_id] = spawned
        request: Message = {"id": request_id, "env": dict(env), "cwd": str(cwd), "log": str(log_path)}
        if identity is not None:
            request.update(uid=identity.uid, gid=identity.gid)
        self._proc.stdin.write(_frame(request))
        with contextlib.suppress(ConnectionError):  # a dead zygote fails `spawned` from the reader
            await self._proc.stdin.drain()
        return await spawned

    async def close(self) -> None:
        if self._proc is None:
            return
        await self._stop()
        if self._reader is not None:
            await self._reader

    async def _stop(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.close()  # the zygote exits at the end of its input
        try:
            await asyncio.wait_for(self._proc.wait(), CLOSE_TIMEOUT)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        assert self._proc is not None
        try:
            while True:
                self._handle(await _read_frame(stdout))
        except asyncio.IncompleteReadError:
            pass  # the zygote exited
        except (ValueError, KeyError):
            self._proc.kill()  # it broke the protocol: a zygote we cannot follow must not run actions
        code = await self._proc.wait()
        gone = f"the fork server (pid {self._proc.pid}) exited with code {code}"
        for spawned in self._spawns.values():
            _fail(spawned, f"{gone} before starting the action")
        for pid, exited in self._exits.items():
            _fail(exited, f"{gone}; the exit status of action process {pid} is lost")
        self._spawns.clear()
        self._exits.clear()

    def _handle(self, message: Message) -> None:
        if "exit" in message:
            self._exits.pop(message["pid"]).set_result(message["exit"])
            return
        spawned = self._spawns.pop(message["id"])
        if "error" in message:
            _fail(spawned, message["error"], OSError)
            return
        pid = message["pid"]
        # Registered here, in frame order, so the exit frame that may follow at once finds it.
        exited = self._exits[pid] = asyncio.get_running_loop().create_future()
        # A waiter may give up (a timeout, a shutdown) before the zygote dies and fails this
        # future: a lost status nobody waits for is no error to log.
        exited.add_done_callback(_observe)
        if spawned.cancelled():
            _kill_group(pid)  # nobody will wait for this action: do not leave it running
        else:
            spawned.set_result(ForkedProcess(pid, exited))


def _fail(future: asyncio.Future[Any], message: str, error: Callable[[str], Exception] = ForkServerError) -> None:
    if not future.done():
        future.set_exception(error(message))


def _observe(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _frame(message: Message) -> bytes:
    body = json.dumps(message).encode()
    return len(body).to_bytes(4, "big") + body


async def _read_frame(stream: asyncio.StreamReader) -> Message:
    size = int.from_bytes(await stream.readexactly(4), "big")
    message: Message = json.loads(await stream.readexactly(size))
    return message


# ---- The zygote process: `python -m fanout.dispatch.forkserver` ----


class _Zygote:
    def __init__(self, requests: int, replies: int) -> None:
        self.requests = requests
        self.replies = replies
        self.pid = os.getpid()
        self.wakeup, wakeup_write = os.pipe()
        os.set_blocking(wakeup_write, False)
        # A Python-level handler, so that SIGCHLD writes to the wakeup fd and ends select().
        self.default_sigchld = signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wakeup_write)

    def serve(self) -> None:
        self._send({"ready": True})
        pending = bytearray()
        while True:
            readable, _, _ = select.select([self.requests, self.wakeup], [], [])
            if self.wakeup in readable:
                os.read(self.wakeup, 4096)
                self._reap()
            if self.requests in readable:
                data = os.read(self.requests, 1 << 16)
                if not data:
                    return  # the dispatcher closed our stdin, or died
                pending += data
                for request in _frames(pending):
                    self._spawn(request)

    def _spawn(self, request: Message) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            self._send({"id": request["id"], "error": f"fork: {exc}"})
            return
        if pid == 0:
            self._become_action(request)
        self._send({"id": request["id"], "pid": pid})

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._send({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})

    def _send(self, message: Message) -> None:
        data = memoryview(_frame(message))
        while data:  # a signal can cut a pipe write short
            data = data[os.write(self.replies, data) :]

    def _become_action(self, request: Message) -> NoReturn:
        code = 1
        try:
            os.setsid()
            die_with_parent(parent_pid=self.pid)  # the zygote exits with its dispatcher; so do its actions
            _redirect(request["log"])
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, self.default_sigchld)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the protocol pipes above all: EOF must mean a dead zygote
            if "uid" in request:
                os.fchown(1, request["uid"], request["gid"])  # its log, which its keeper reopens as this user
                become_user.become(request["uid"], request["gid"])
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            code = _run_worker()
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def _frames(pending: bytearray) -> Iterator[Message]:
    """Take the complete frames off the front of `pending`."""
    while len(pending) >= 4:
        end = 4 + int.from_bytes(pending[:4], "big")
        if len(pending) < end:
            return
        body = bytes(pending[4:end])
        del pending[:end]
        yield json.loads(body)


def _redirect(log_path: str) -> None:
    stdin = os.open(os.devnull, os.O_RDONLY)
    # Appended: the worker's log keeper may cut the file while output goes on. Never through a
    # link: another action of the tenant could have planted one here (see untrusted_files.py).
    log = open_untrusted(Path(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.dup2(stdin, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(stdin)
    os.close(log)


def _run_worker() -> int:
    # What `python -m fanout.dispatch.worker --one-shot` sets up: the start directory first on the path, argv.
    if not sys.flags.safe_path:
        sys.path[0] = os.getcwd()
    sys.argv = [str(worker.__file__), "--one-shot"]
    try:
        return worker.run_one_shot()
    except SystemExit as exc:  # sys.exit() in a task ends the process as it would in `python -m`
        return _exit_code(exc)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)  # what the interpreter does with sys.exit("message")
    return 1


def main() -> None:
    # Keep the protocol off fds 0 and 1, so a stray print or read cannot corrupt it.
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    warm_up.warm_up()  # before the first fork: see warm_up.py
    _Zygote(requests, replies).serve()


if __name__ == "__main__":
    main()
