"""A reusable worker killed with SIGKILL loses nothing: its actions run again and each ends once.

The session's dispatcher runs the pools; the test kills one worker process
while it runs four children, the way the OOM killer or a crash would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from fanout.dispatch.dispatcher import Dispatcher
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from tests.conftest import TASKS_FILE, Tenant
from tests.helpers import DEV, LoopThread, eventually, terminal_events

FANOUT = str(Path(sys.executable).parent / "fanout")


def test_a_killed_workers_actions_run_again_and_end_once(
    tenant: Tenant, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    logs = tmp_path / "executions"
    logs.mkdir()
    fan = load_task(f"file:{TASKS_FILE}:logged_pooled_fan")
    run = start_run(tenant.client, fan, str(logs), 8, 2.0)  # children: replicas=1, concurrency=4

    def first_four_running() -> int:
        started = [int(f.read_text().split()[0]) for f in logs.iterdir() if f.read_text()]
        assert len(started) == 4, started
        return started[0]

    worker = eventually(first_four_running, timeout=30)
    assert worker != os.getpid()
    os.kill(worker, signal.SIGKILL)

    assert run.wait(90).outputs() == list(range(8))
    executions = {int(f.name): f.read_text().split() for f in logs.iterdir()}
    killed = [x for x, pids in executions.items() if pids[0] == str(worker)]
    assert len(killed) == 4
    for x in killed:  # ran again, in another worker
        assert len(executions[x]) == 2 and executions[x][1] != str(worker)
    assert terminal_events(tenant.client, run.name, "root", 8) == Counter(
        {name: 1 for name in _children(tenant, run.name)}
    )


def _children(tenant: Tenant, run: str) -> list[str]:
    names: list[str] = []
    for event in tenant.client.watch_children(run, "root"):
        if event.HasField("replay_done"):
            return names
        names.append(event.update.name)
    return names


def test_a_task_blocking_its_worker_past_its_timeout_times_out_and_the_worker_is_replaced(
    tenant: Tenant, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    probe = load_task(f"file:{TASKS_FILE}:blocking_timeout_probe")
    assert start_run(tenant.client, probe).wait(60).outputs() == "TIMED_OUT: Timeout"
    # The worker that would not cancel it was killed; the pool starts another for the next action.
    again = load_task(f"file:{TASKS_FILE}:timeout_probe")
    assert start_run(tenant.client, again, str(tmp_path / "marker")).wait(60).outputs() == "TIMED_OUT: Timeout"


def test_a_killed_dispatchers_workers_die_with_it(
    tenant: Tenant, dispatcher: Dispatcher, endpoint: str, loop_thread: LoopThread, plane: ControlPlane, tmp_path: Path
) -> None:
    # A second dispatcher, as its own process, shares the work with the session's; it is then killed.
    token = loop_thread.run(plane.tokens.create("dispatcher"))
    streams = sum(plane.wakeup.scopes().values())  # the lease streams open before the second dispatcher's
    other = subprocess.Popen(
        [FANOUT, "dispatcher", *DEV, "--endpoint", endpoint, "--work-dir", str(tmp_path / "actions")],
        env={**os.environ, "FANOUT_TOKEN": token},  # never a secret on a command line
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Its lease stream open before the run starts, or the session's dispatcher may take all the work.
        eventually(lambda: sum(plane.wakeup.scopes().values()) > streams, timeout=30)
        fan = load_task(f"file:{TASKS_FILE}:narrow_fan")
        run = start_run(tenant.client, fan, 64, 1.0)
        workers = eventually(lambda: _workers_of(other.pid), timeout=30)
        other.kill()
        other.wait()
        eventually(lambda: not any(_alive(pid) for pid in workers), timeout=10)
        assert len(run.wait(90).outputs()) == 64  # what it held ran again on the session's dispatcher
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def _workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"fanout.dispatch.worker" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
