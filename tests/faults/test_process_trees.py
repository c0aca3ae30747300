"""An action's whole process tree stops with it: on timeout, on abort, on shutdown.

Each command below starts two background sleeps, one of them in a session
of its own (out of reach of the action's process group), and then sleeps
itself; the pids go to a file so the test can look for them in /proc.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fanout.dispatch.backend import Outcome
from fanout.dispatch.process_backend import ProcessBackend
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from tests.conftest import Tenant
from tests.helpers import eventually

UNUSED_ENDPOINT = "127.0.0.1:1"


def tree_command(pid_file: Path) -> list[str]:
    script = (
        f"sleep 30 & echo $! >> {pid_file}; "
        f"setsid sleep 30 & echo $! >> {pid_file}; "
        f"echo $$ >> {pid_file}; sleep 30; echo done"
    )
    return ["sh", "-c", script]


def alive(pid: int) -> bool:
    """Running, not a zombie (a zombie has stopped; only its parent's wait is missing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def pids(pid_file: Path) -> list[int]:
    found = [int(line) for line in pid_file.read_text().split()] if pid_file.exists() else []
    assert len(found) == 3, found
    return found


def test_a_timeout_stops_the_whole_tree_even_a_grandchild_in_its_own_session(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    spec = pb.ActionSpec(name="tree", command=tree_command(pid_file), timeout_seconds=1)
    backend = ProcessBackend(tmp_path / "actions")

    async def main() -> Outcome:
        try:
            action = dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=1, action_token="unused")
            return await backend.run(action, UNUSED_ENDPOINT, lambda: None)
        finally:
            await backend.shutdown()

    outcome = asyncio.run(main())

    assert outcome.phase == pb.TIMED_OUT
    started = pids(pid_file)
    eventually(lambda: not any(alive(pid) for pid in started), timeout=2)


def test_an_abort_stops_the_whole_tree(tenant: Tenant, dispatcher: object, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    run = tenant.client.create_run(pb.ActionSpec(task_ref="tree", command=tree_command(pid_file)))
    started = eventually(lambda: pids(pid_file), timeout=30)

    tenant.client.abort_run(run.name)

    # The abort reaches the dispatcher with its next heartbeat (a second at most).
    eventually(lambda: not any(alive(pid) for pid in started), timeout=4)
