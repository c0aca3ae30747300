"""Local process backend: each action without a ReusePolicy gets a worker of its own (its "container").

A Python task runs in a one-shot worker (worker.py: the same worker code as
a pool's, concurrency 1, exiting after its action), by default a child of a
fork server that has imported it already (see forkserver.py); actions with
an explicit command run that command. Both start with a worker's scrubbed
environment (worker_env.py), in their private folder, under their tenant's
uid when the dispatcher is root (sandbox.py). Each action gets a folder with its spec, its
result and its log (see workdirs.py): the worker writes the result there
before it exits, and the folder stays until the outcome was reported, so a
restarted dispatcher reports finished work instead of running it again;
then it is removed after success, or cut down to its log's tail after a
failure. File work runs on threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from fanout.dispatch import become_user, worker
from fanout.dispatch.backend import Outcome, StartedCallback, failure
from fanout.dispatch.forkserver import ForkServer, ForkServerError, needs_exec
from fanout.dispatch.guard import Guard
from fanout.dispatch.process_tree import kill_tree_now, stop_tree
from fanout.dispatch.sandbox import Identity, Sandbox
from fanout.dispatch.untrusted_files import open_untrusted, read_untrusted
from fanout.dispatch.workdirs import LOG, RESULT, WorkRoot, outcome_phase, read_result
from fanout.dispatch.worker_env import TLS_VARIABLES, worker_env
from fanout.server.parent_death import command_dying_with_parent
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb

LOG_TAIL_BYTES = 4000
# Action processes running at once, whatever the dispatcher's capacity.
MAX_PROCESSES = 256
ONE_SHOT_COMMAND = (sys.executable, "-m", "fanout.dispatch.worker", "--one-shot")

log = logging.getLogger(__name__)


class Process(Protocol):
    """An action's process: an asyncio subprocess or a child of the fork server."""

    @property
    def pid(self) -> int: ...

    async def wait(self) -> int: ...


class ProcessBackend:
    runs_images = False  # every task runs in this machine's Python, whatever image its environment names

    def __init__(
        self,
        work_root: Path,
        max_output_bytes: int = 1 << 20,
        fork_server: bool = True,
        max_processes: int = MAX_PROCESSES,
        sandbox: Sandbox | None = None,
        tls: Mapping[str, str] | None = None,
    ) -> None:
        self.work_root = work_root
        self.sandbox = sandbox or Sandbox()
        self.max_output_bytes = max_output_bytes
        # A dispatcher's capacity is sized for reusable pools (cheap asyncio slots);
        # processes are bounded apart, and a parent waiting on its children gives
        # its room back (as it gives back its credit), so nested fanouts cannot deadlock.
        self._process_room = asyncio.Semaphore(max_processes)
        self._holding_room: set[str] = set()
        self._work = WorkRoot(work_root)
        self._guard = Guard()  # stops the actions' trees if this process dies
        self._procs: set[Process] = set()
        # The dispatcher's TLS files, for the workers' channels (by default its FANOUT_TLS_* variables).
        self._tls = dict(tls) if tls is not None else {n: os.environ[n] for n in TLS_VARIABLES if n in os.environ}
        self._use_fork_server = fork_server
        self._fork_server: ForkServer | None = None
        self._fork_server_lock = asyncio.Lock()  # one (re)start at a time, however many actions arrive
        # Finished but unreported results an earlier dispatcher left, by action: a
        # new lease of one reports that result instead of running it again.
        self._finished: dict[str, tuple[dpb.LeasedAction, Path]] = {}

    async def recover(self) -> list[tuple[dpb.LeasedAction, Outcome]]:
        if not await asyncio.to_thread(self._work.claim):
            log.warning("%s is in use by another dispatcher: its unreported results are left to it", self.work_root)
            return []
        leftovers = await asyncio.to_thread(self._work.leftovers)
        for leftover in leftovers:
            if outcome_phase(leftover.result) == pb.SUCCEEDED:
                self._finished[_key(leftover.action)] = (leftover.action, leftover.folder)
        return [(leftover.action, Outcome(outcome_phase(leftover.result), leftover.result)) for leftover in leftovers]

    async def release(self, action: dpb.LeasedAction, outcome: Outcome) -> None:
        self._finished.pop(_key(action), None)
        await asyncio.to_thread(self._work.release, self._work.folder(action), outcome.phase == pb.SUCCEEDED)

    def waiting(self, action: dpb.LeasedAction) -> None:
        self._give_room(_key(action))

    def _give_room(self, key: str) -> None:
        if key in self._holding_room:
            self._holding_room.discard(key)
            self._process_room.release()

    async def run(self, action: dpb.LeasedAction, endpoint: str, on_started: StartedCallback) -> Outcome:
        key = _key(action)
        await self._process_room.acquire()
        self._holding_room.add(key)
        try:
            return await self._run(action, endpoint, on_started)
        finally:
            self._give_room(key)

    async def _run(self, action: dpb.LeasedAction, endpoint: str, on_started: StartedCallback) -> Outcome:
        earlier = await self._earlier_result(action)
        if earlier is not None:
            return earlier
        spec = action.spec
        identity = await asyncio.to_thread(self.sandbox.identity, action.tenant)
        owner = (identity.uid, identity.gid) if identity else None
        workdir = await asyncio.to_thread(self._work.prepare, action, owner)
        spec_path = workdir / "spec.pb"
        result_path = workdir / RESULT
        env = {
            **worker_env(spec, endpoint, self._tls),
            "FANOUT_TOKEN": action.action_token,  # its own action's token only
            worker.ENV_RUN: action.run,
            worker.ENV_ACTION: spec.name,
            worker.ENV_ATTEMPT: str(action.attempt),
            worker.ENV_SPEC_PATH: str(spec_path),
            worker.ENV_RESULT_PATH: str(result_path),
            worker.ENV_MAX_OUTPUT: str(action.max_payload_bytes or self.max_output_bytes),  # the tenant's own cap
        }
        if identity is not None:
            env["HOME"] = str(identity.home)
        chosen = self.sandbox.workdir_of(spec.workdir)
        cwd = chosen if chosen and Path(chosen).is_dir() else str(workdir)
        log_path = workdir / LOG
        try:
            proc = await self._start(spec, env, cwd, log_path, identity)
        except OSError as exc:
            return failure("LaunchError", f"cannot start {spec.command[0] if spec.command else sys.executable}: {exc}")
        self._procs.add(proc)
        # Guarded before it is reported RUNNING: from then on, a dispatcher crash cannot leave its tree behind.
        await self._guard.watch(proc.pid)
        on_started()
        try:
            timeout = spec.timeout_seconds or None
            try:
                code = await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                await stop_tree(proc.pid)
                await proc.wait()
                return failure("Timeout", f"the action ran longer than {spec.timeout_seconds}s", pb.TIMED_OUT)
            except ForkServerError:
                kill_tree_now(proc.pid)  # its reaper is gone: nobody could tell when it ends
                raise
            except asyncio.CancelledError:
                # Aborted, leased elsewhere, or shutting down: stop it now, even if cancelled again meanwhile.
                await asyncio.shield(stop_tree(proc.pid))
                raise
        finally:
            self._procs.discard(proc)
            await asyncio.shield(self._guard.forget(proc.pid))
        return await asyncio.to_thread(self._outcome, code, result_path, log_path, bool(spec.command))

    async def _earlier_result(self, action: dpb.LeasedAction) -> Outcome | None:
        """The result of an earlier attempt left unreported on disk, now this attempt's."""
        entry = self._finished.pop(_key(action), None)
        if entry is None or entry[0].attempt >= action.attempt:
            return None
        earlier, folder = entry
        result = await asyncio.to_thread(_move_result, folder, self._work.folder(action))
        if result is None:
            return None
        log.info("%s: reporting the result attempt %d left on disk", _key(action), earlier.attempt)
        return Outcome(outcome_phase(result), result)

    def _outcome(self, code: int, result_path: Path, log_path: Path, explicit_command: bool) -> Outcome:
        result = read_result(result_path)
        if result is not None:
            return Outcome(outcome_phase(result), result)
        if explicit_command and code == 0:
            return Outcome(pb.SUCCEEDED, pb.ActionResult())
        tail = _tail(log_path, LOG_TAIL_BYTES).decode(errors="replace")
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return failure("ProcessExited", f"the action's process {how}; last output:\n{tail}")

    async def _start(
        self, spec: pb.ActionSpec, env: Mapping[str, str], cwd: str, log_path: Path, identity: Identity | None
    ) -> Process:
        if not spec.command and not needs_exec(spec.env):
            server = await self._running_fork_server()
            if server is not None:
                with contextlib.suppress(ForkServerError):  # it died just now: a new process this time
                    return await server.spawn(env, cwd, log_path, identity)
        # Appended: a one-shot worker's log keeper may cut the file while output goes on.
        output = open_untrusted(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            user: dict[str, object] = {}
            if identity is not None:
                os.fchown(output, identity.uid, identity.gid)  # its own log: the keeper reopens it as the action
                if spec.command:  # a trusted command: exec'd as the tenant's user
                    user = {"user": identity.uid, "group": identity.gid, "extra_groups": []}
                else:  # our worker, which drops to it itself (become_user.py)
                    env = {**env, become_user.ENV_UID: str(identity.uid), become_user.ENV_GID: str(identity.gid)}
            return await asyncio.create_subprocess_exec(
                *command_dying_with_parent(list(spec.command) or list(ONE_SHOT_COMMAND)),
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # own process group: a timeout or shutdown kills its children too
                **user,  # type: ignore[arg-type]
            )
        finally:
            os.close(output)

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
        await asyncio.gather(*(stop_tree(proc.pid) for proc in list(self._procs)))
        for proc in list(self._procs):
            with contextlib.suppress(ProcessLookupError, ForkServerError):
                await proc.wait()
        async with self._fork_server_lock:
            self._use_fork_server = False  # no new zygote after this: nothing would close it
            if self._fork_server is not None:
                await self._fork_server.close()
                self._fork_server = None
        await self._guard.close()
        self._work.close()


def _key(action: dpb.LeasedAction) -> str:
    return f"{action.tenant}/{action.run}/{action.spec.name}"


def _tail(path: Path, size: int) -> bytes:
    """The last `size` bytes of a file, without reading the rest (a log may be huge)."""
    try:
        return read_untrusted(path, size)  # the action may have made its log a link to a secret
    except OSError:
        return b""


def _move_result(earlier: Path, folder: Path) -> pb.ActionResult | None:
    """Rename an earlier attempt's folder to this attempt's, if its result is still whole."""
    result = read_result(earlier / RESULT)
    if result is None:
        return None
    try:
        earlier.rename(folder)
    except OSError:
        return None
    return result
