"""Local process backend: each action is a child process (its "container").

Python tasks run `python -m fanout.runtime`, by default as children of a fork
server that has imported it already (see forkserver.py); actions with an
explicit command run that command. Each action gets a scratch directory with
its spec, its result and its logs; the directory is removed after success and
kept after a failure, for reading the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from fanout import runtime
from fanout.server.dispatcher.backend import Outcome, StartedCallback, failure
from fanout.server.dispatcher.forkserver import ForkServer, ForkServerError, needs_exec
from fanout.server.parent_death import command_dying_with_parent
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb

LOG_TAIL_BYTES = 4000
RUNTIME_COMMAND = (sys.executable, "-m", "fanout.runtime")

log = logging.getLogger(__name__)


class Process(Protocol):
    """An action's process: an asyncio subprocess or a child of the fork server."""

    @property
    def pid(self) -> int: ...

    async def wait(self) -> int: ...


class ProcessBackend:
    def __init__(self, work_root: Path, max_output_bytes: int = 1 << 20, fork_server: bool = True) -> None:
        self.work_root = work_root
        self.max_output_bytes = max_output_bytes
        self._procs: set[Process] = set()
        self._use_fork_server = fork_server
        self._fork_server: ForkServer | None = None
        self._fork_server_lock = asyncio.Lock()  # one (re)start at a time, however many actions arrive

    async def run(self, action: dpb.LeasedAction, endpoint: str, on_started: StartedCallback) -> Outcome:
        spec = action.spec
        workdir = self.work_root / action.tenant / action.run / f"{spec.name}.{action.attempt}"
        workdir.mkdir(parents=True, exist_ok=True)
        spec_path = workdir / "spec.pb"
        result_path = workdir / "result.pb"
        spec_path.write_bytes(spec.SerializeToString())
        env = {
            **os.environ,
            **spec.env,
            "FANOUT_ENDPOINT": endpoint,
            "FANOUT_TOKEN": action.action_token,
            "FANOUT_CONFIG": os.devnull,  # the action's identity comes from the variables, never a file
            runtime.ENV_RUN: action.run,
            runtime.ENV_ACTION: spec.name,
            runtime.ENV_SPEC_PATH: str(spec_path),
            runtime.ENV_RESULT_PATH: str(result_path),
            runtime.ENV_MAX_OUTPUT: str(self.max_output_bytes),
        }
        cwd = spec.workdir if spec.workdir and Path(spec.workdir).is_dir() else str(workdir)
        log_path = workdir / "output.log"
        try:
            proc = await self._start(spec, env, cwd, log_path)
        except OSError as exc:
            return failure("LaunchError", f"cannot start {spec.command[0] if spec.command else sys.executable}: {exc}")
        self._procs.add(proc)
        on_started()
        try:
            timeout = spec.timeout_seconds or None
            try:
                code = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                _kill_group(proc.pid)
                await proc.wait()
                return failure("Timeout", f"the action ran longer than {spec.timeout_seconds}s", pb.TIMED_OUT)
            except ForkServerError:
                _kill_group(proc.pid)  # its reaper is gone: nobody could tell when it ends
                raise
            except asyncio.CancelledError:
                _kill_group(proc.pid)  # aborted, leased elsewhere, or shutting down: stop it now
                raise
        finally:
            self._procs.discard(proc)
        outcome = self._outcome(code, result_path, log_path, bool(spec.command))
        if outcome.phase == pb.SUCCEEDED:
            shutil.rmtree(workdir, ignore_errors=True)
        return outcome

    def _outcome(self, code: int, result_path: Path, log_path: Path, explicit_command: bool) -> Outcome:
        if result_path.exists():
            result = pb.ActionResult.FromString(result_path.read_bytes())
            return Outcome(pb.FAILED if result.HasField("error") else pb.SUCCEEDED, result)
        if explicit_command and code == 0:
            return Outcome(pb.SUCCEEDED, pb.ActionResult())
        tail = log_path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace") if log_path.exists() else ""
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return failure("ProcessExited", f"the action's process {how}; last output:\n{tail}")

    async def _start(self, spec: pb.ActionSpec, env: Mapping[str, str], cwd: str, log_path: Path) -> Process:
        if not spec.command and not needs_exec(spec.env):
            server = await self._running_fork_server()
            if server is not None:
                with contextlib.suppress(ForkServerError):  # it died just now: a new process this time
                    return await server.spawn(env, cwd, log_path)
        with log_path.open("wb") as output:
            return await asyncio.create_subprocess_exec(
                *command_dying_with_parent(list(spec.command) or list(RUNTIME_COMMAND)),
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # own process group: a timeout or shutdown kills its children too
            )

    async def _running_fork_server(self) -> ForkServer | None:
        """The fork server, restarted if it died; None if it is off or failed to start."""
        async with self._fork_server_lock:
            if self._use_fork_server and (self._fork_server is None or not self._fork_server.alive):
                if self._fork_server is not None:
                    await self._fork_server.close()
                self._fork_server = await self._start_fork_server()
            return self._fork_server

    async def _start_fork_server(self) -> ForkServer | None:
        server = ForkServer()
        try:
            await server.start()
        except (ForkServerError, OSError) as exc:
            # Whatever broke it would likely break the next start too; new interpreters still work.
            log.warning("no fork server (%s); starting each action as a new process", exc)
            self._use_fork_server = False
            return None
        return server

    async def shutdown(self) -> None:
        for proc in list(self._procs):
            _kill_group(proc.pid)
        for proc in list(self._procs):
            with contextlib.suppress(ProcessLookupError, ForkServerError):
                await proc.wait()
        async with self._fork_server_lock:
            self._use_fork_server = False  # no new zygote after this: nothing would close it
            if self._fork_server is not None:
                await self._fork_server.close()
                self._fork_server = None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
