"""Local process backend: each action is a child process (its "container").

Python tasks run `python -m fanout.runtime`; actions with an explicit command
run that command. Each action gets a scratch directory with its spec, its
result and its logs; the directory is removed after success and kept after
a failure, for reading the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

from fanout import runtime
from fanout.server.dispatcher.backend import Outcome, StartedCallback, failure
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb

LOG_TAIL_BYTES = 4000


class ProcessBackend:
    def __init__(self, work_root: Path, max_output_bytes: int = 1 << 20) -> None:
        self.work_root = work_root
        self.max_output_bytes = max_output_bytes
        self._procs: set[asyncio.subprocess.Process] = set()

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
        command = list(spec.command) or [sys.executable, "-m", "fanout.runtime"]
        cwd = spec.workdir if spec.workdir and Path(spec.workdir).is_dir() else str(workdir)
        log_path = workdir / "output.log"
        with log_path.open("wb") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    cwd=cwd,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # own process group: a timeout or shutdown kills its children too
                )
            except OSError as exc:
                return failure("LaunchError", f"cannot start {command[0]}: {exc}")
            self._procs.add(proc)
            on_started()
            try:
                timeout = spec.timeout_seconds or None
                try:
                    code = await asyncio.wait_for(proc.wait(), timeout)
                except TimeoutError:
                    _kill_group(proc)
                    await proc.wait()
                    return failure("Timeout", f"the action ran longer than {spec.timeout_seconds}s", pb.TIMED_OUT)
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

    async def shutdown(self) -> None:
        for proc in list(self._procs):
            _kill_group(proc)
        for proc in list(self._procs):
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
