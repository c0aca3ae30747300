"""The fork server: a real zygote, real forked actions, and fanouts through it."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import fanout
from fanout import serialization
from fanout.dispatch import worker
from fanout.dispatch.backend import Outcome
from fanout.dispatch.forkserver import ForkServer, ForkServerError
from fanout.dispatch.process_backend import ProcessBackend
from fanout.runtime import load_task
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from tests.conftest import Tenant
from tests.helpers import eventually

T = TypeVar("T")

# Actions here never call the control plane, so nothing listens at this endpoint.
UNUSED_ENDPOINT = "127.0.0.1:1"

TASKS = textwrap.dedent(
    """
    import asyncio
    import os
    import signal
    import subprocess
    import sys

    import fanout

    env = fanout.TaskEnvironment(name="forkserver_test")


    @env.task
    async def whoami() -> dict:
        print("to stdout")
        print("to stderr", file=sys.stderr)
        return {
            "ppid": os.getppid(),
            "own_session": os.getsid(0) == os.getpid(),
            "cwd": os.getcwd(),
            "cwd_on_path": os.getcwd() in sys.path,
            "mark": os.environ.get("MARK"),
            "has_path": "PATH" in os.environ,
            "sigchld_default": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
        }


    @env.task
    def environment() -> dict:
        with open("/proc/self/environ", "rb") as f:
            return {"variables": dict(os.environ), "at_start": f.read().decode(errors="replace")}


    @env.task
    async def leave(code: int | str) -> None:
        sys.exit(code)


    @env.task
    async def die(signum: int) -> None:
        os.kill(os.getpid(), signum)


    @env.task
    async def hang(pid_file: str) -> None:
        sleeper = subprocess.Popen(["sleep", "300"])  # in the action's process group
        with open(pid_file + ".tmp", "w") as f:
            f.write(f"{os.getppid()} {sleeper.pid}")
        os.replace(pid_file + ".tmp", pid_file)
        await asyncio.sleep(300)


    @env.task
    async def fan_whoami(n: int) -> list[int]:
        kids = await asyncio.gather(*(whoami() for _ in range(n)))
        return [os.getppid(), *(k["ppid"] for k in kids)]
    """
)

_names = itertools.count()


@pytest.fixture
def tasks_file(tmp_path: Path) -> Path:
    path = tmp_path / "forkserver_tasks.py"
    path.write_text(TASKS)
    return path


def spec_for(
    tasks_file: Path, task: str, *args: Any, timeout: int = 0, env: dict[str, str] | None = None
) -> pb.ActionSpec:
    return pb.ActionSpec(
        name=f"{task}-{next(_names)}",
        task_name=task,
        task_ref=f"file:{tasks_file}:{task}",
        inputs=serialization.encode_inputs(task, args, {}),
        timeout_seconds=timeout,
        env=env or {},
    )


def runtime_env(tmp_path: Path, spec: pb.ActionSpec, **extra: str) -> dict[str, str]:
    """What the backend gives the runtime, with the spec written where it says."""
    spec_path = tmp_path / f"{spec.name}.pb"
    spec_path.write_bytes(spec.SerializeToString())
    return {
        "FANOUT_ENDPOINT": UNUSED_ENDPOINT,
        "FANOUT_TOKEN": "unused",
        "FANOUT_CONFIG": os.devnull,
        worker.ENV_RUN: "run",
        worker.ENV_ACTION: spec.name,
        worker.ENV_SPEC_PATH: str(spec_path),
        worker.ENV_RESULT_PATH: str(result_path(tmp_path, spec)),
        **extra,
    }


def result_path(tmp_path: Path, spec: pb.ActionSpec) -> Path:
    return tmp_path / f"{spec.name}.result"


def output(result: pb.ActionResult) -> Any:
    assert not result.HasField("error"), result.error
    return serialization.decode_output(result.outputs)


def with_fork_server(scenario: Callable[[ForkServer], Awaitable[T]]) -> T:
    async def main() -> T:
        server = ForkServer()
        await server.start()
        try:
            return await scenario(server)
        finally:
            await server.close()

    return asyncio.run(main())


def leased(spec: pb.ActionSpec) -> dpb.LeasedAction:
    return dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=1, action_token="unused")


def run_actions(backend: ProcessBackend, *specs: pb.ActionSpec) -> list[Outcome]:
    """Run actions one after another through the backend, then shut it down."""

    async def main() -> list[Outcome]:
        try:
            return [await backend.run(leased(spec), UNUSED_ENDPOINT, lambda: None) for spec in specs]
        finally:
            await backend.shutdown()

    return asyncio.run(main())


def alive(pid: int) -> bool:
    """Running, not a zombie (this machine's init may be slow to reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize(
    ("task", "args", "code"),
    [
        ("whoami", (), 0),
        ("leave", (3,), 3),
        ("leave", ("a message",), 1),  # as the interpreter exits on sys.exit("a message")
        ("die", (signal.SIGKILL,), -signal.SIGKILL),
    ],
)
def test_a_child_exit_status_is_reported_like_a_returncode(
    tmp_path: Path, tasks_file: Path, task: str, args: tuple[Any, ...], code: int
) -> None:
    spec = spec_for(tasks_file, task, *args)

    async def scenario(server: ForkServer) -> int:
        proc = await server.spawn(runtime_env(tmp_path, spec), tmp_path, tmp_path / "output.log")
        return await proc.wait()

    assert with_fork_server(scenario) == code


def test_an_unexpected_exception_exits_1_with_its_traceback_in_the_log(tmp_path: Path) -> None:
    async def scenario(server: ForkServer) -> int:
        proc = await server.spawn({}, tmp_path, tmp_path / "output.log")  # no spec: the runtime cannot start
        return await proc.wait()

    assert with_fork_server(scenario) == 1
    log = (tmp_path / "output.log").read_text()
    assert "Traceback" in log
    assert "KeyError: 'FANOUT_SPEC_PATH'" in log


def test_a_child_gets_the_requested_env_cwd_and_log_and_its_own_session(tmp_path: Path, tasks_file: Path) -> None:
    spec = spec_for(tasks_file, "whoami")
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    async def scenario(server: ForkServer) -> tuple[int, int | None]:
        proc = await server.spawn(runtime_env(tmp_path, spec, MARK="set"), cwd, tmp_path / "output.log")
        return await proc.wait(), server.pid

    code, zygote = with_fork_server(scenario)

    assert code == 0
    me = output(pb.ActionResult.FromString(result_path(tmp_path, spec).read_bytes()))
    assert me == {
        "ppid": zygote,
        "own_session": True,
        "cwd": str(cwd),
        "cwd_on_path": True,  # as `python -m` started in cwd would have it
        "mark": "set",
        "has_path": False,  # the environment is replaced, not merged with the zygote's
        "sigchld_default": True,
    }
    assert (tmp_path / "output.log").read_text().splitlines() == ["to stdout", "to stderr"]


def test_when_the_zygote_dies_pending_waits_and_later_spawns_fail_clearly(tmp_path: Path, tasks_file: Path) -> None:
    spec = spec_for(tasks_file, "hang", str(tmp_path / "pids"))

    async def scenario(server: ForkServer) -> None:
        proc = await server.spawn(runtime_env(tmp_path, spec), tmp_path, tmp_path / "output.log")
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        try:
            gone = rf"the fork server \(pid {server.pid}\) exited with code -9"
            with pytest.raises(ForkServerError, match=rf"{gone}; the exit status of action process {proc.pid} is lost"):
                await proc.wait()
            assert not server.alive
            with pytest.raises(ForkServerError, match="the fork server is not running"):
                await server.spawn({}, tmp_path, tmp_path / "never.log")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)

    with_fork_server(scenario)


def test_a_timeout_kills_the_actions_whole_process_group(tmp_path: Path, tasks_file: Path) -> None:
    pid_file = tmp_path / "pids"

    [outcome] = run_actions(
        ProcessBackend(tmp_path / "actions"), spec_for(tasks_file, "hang", str(pid_file), timeout=2)
    )

    assert outcome.phase == pb.TIMED_OUT
    assert outcome.result.error.type == "Timeout"
    parent, sleeper = map(int, pid_file.read_text().split())
    assert parent != os.getpid()  # it was forked by the zygote, not started by this process
    eventually(lambda: not alive(sleeper), timeout=10)


def test_the_backend_restarts_a_killed_zygote(tmp_path: Path, tasks_file: Path) -> None:
    backend = ProcessBackend(tmp_path / "actions")

    async def run_one() -> Outcome:
        return await backend.run(leased(spec_for(tasks_file, "whoami")), UNUSED_ENDPOINT, lambda: None)

    async def kill_the_zygote_between_actions() -> list[Outcome]:
        try:
            before = await run_one()
            os.kill(output(before.result)["ppid"], signal.SIGKILL)
            # The next action may still race the zygote's death (then it runs as a new process);
            # the one after must be forked by a new zygote.
            return [before, await run_one(), await run_one()]
        finally:
            await backend.shutdown()

    before, racing, after = asyncio.run(kill_the_zygote_between_actions())

    assert [o.phase for o in (before, racing, after)] == [pb.SUCCEEDED] * 3
    old, new = output(before.result)["ppid"], output(after.result)["ppid"]
    assert new not in (old, os.getpid())
    assert not alive(old)


@pytest.mark.parametrize(
    ("fork_server", "env", "forked"),
    [
        (True, {}, True),
        (False, {}, False),
        (True, {"PYTHONDONTWRITEBYTECODE": "1"}, False),  # read at interpreter start: a fork would ignore it
    ],
)
def test_which_python_actions_are_forked(
    tmp_path: Path, tasks_file: Path, fork_server: bool, env: dict[str, str], forked: bool
) -> None:
    backend = ProcessBackend(tmp_path / "actions", fork_server=fork_server)

    [outcome] = run_actions(backend, spec_for(tasks_file, "whoami", env=env))

    assert (output(outcome.result)["ppid"] != os.getpid()) == forked


@pytest.mark.parametrize("fork_server", [True, False])
def test_a_one_shot_worker_sees_none_of_the_dispatchers_environment(
    tmp_path: Path, tasks_file: Path, fork_server: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_TOKEN", "the-dispatchers-token")
    monkeypatch.setenv("FANOUT_REDIS_URL", "redis://:the-redis-password@127.0.0.1:1")
    backend = ProcessBackend(tmp_path / "actions", fork_server=fork_server)

    [outcome] = run_actions(backend, spec_for(tasks_file, "environment"))

    seen = output(outcome.result)
    assert seen["variables"]["FANOUT_TOKEN"] == "unused"  # its own action's token (see leased())
    assert "FANOUT_REDIS_URL" not in seen["variables"]
    # Nor in what the process started with (a forked worker's is the fork server's).
    assert "the-dispatchers-token" not in seen["at_start"]
    assert "the-redis-password" not in seen["at_start"]


def test_an_explicit_command_still_runs_as_a_new_process(tmp_path: Path) -> None:
    spec = pb.ActionSpec(name="cmd", command=["sh", "-c", "echo parent=$PPID; exit 3"])

    [outcome] = run_actions(ProcessBackend(tmp_path / "actions"), spec)

    assert outcome.phase == pb.FAILED
    assert "exited with code 3" in outcome.result.error.message
    assert f"parent={os.getpid()}" in outcome.result.error.message


@pytest.mark.usefixtures("dispatcher")
def test_a_fanout_through_the_control_plane_runs_in_children_of_one_zygote(tenant: Tenant, tasks_file: Path) -> None:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)

    parents = fanout.run(load_task(f"file:{tasks_file}:fan_whoami"), 5).outputs()

    assert len(parents) == 6  # the root and its five children
    assert len(set(parents)) == 1
    assert parents[0] != os.getpid()
    assert b"forkserver" in Path(f"/proc/{parents[0]}/cmdline").read_bytes()


def test_a_wait_given_up_leaves_no_unretrieved_error_when_the_zygote_goes(
    tmp_path: Path, tasks_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A dispatcher shutting down cancels its actions' waits, then closes the zygote: the exit
    # status those waits gave up on is lost, and that is no error worth logging.
    spec = spec_for(tasks_file, "hang", str(tmp_path / "pids"))

    async def scenario(server: ForkServer) -> None:
        proc = await server.spawn(runtime_env(tmp_path, spec), tmp_path, tmp_path / "output.log")
        waiting = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0)
        waiting.cancel()
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        for _ in range(200):  # bounded: the reader notices a killed zygote in milliseconds
            if not server.alive:
                break
            await asyncio.sleep(0.05)
        assert not server.alive
        os.killpg(proc.pid, signal.SIGKILL)

    with_fork_server(scenario)
    gc.collect()

    assert "exception was never retrieved" not in caplog.text


WARM_UP_PROBE = textwrap.dedent(
    """
    import dis, json, os, sys, threading
    from fanout import runtime
    from fanout.dispatch import warm_up

    def state():
        code = runtime._run_task.__code__
        plain, adaptive = dis.get_instructions(code), dis.get_instructions(code, adaptive=True)
        return {
            "threads": threading.active_count(),
            "fds": sorted(os.listdir("/proc/self/fd")),
            "path": list(sys.path),
            "streams": [id(sys.stdout), id(sys.stderr)],
            "specialized": sum(a.opname != b.opname for a, b in zip(plain, adaptive)),
        }

    before = state()
    warm_up.warm_up()
    print(json.dumps([before, state()]))
    """
)


def test_the_zygotes_warm_up_leaves_nothing_a_child_would_inherit_but_warmer_code(tmp_path: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", WARM_UP_PROBE], capture_output=True, text=True, check=True, cwd=tmp_path, timeout=60
    )
    before, after = json.loads(probe.stdout)

    assert before.pop("specialized") == 0 and after.pop("specialized") > 0  # the runtime's bytecode, specialized
    assert after == before  # no thread, descriptor, import path or stream of its own
