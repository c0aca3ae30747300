"""Reusable workers: environments with a ReusePolicy run in pools of long-lived worker processes.

Everything is real: the session's Redis, gRPC server and dispatcher (the
dispatcher's pools start `python -m fanout.dispatch.worker` processes).
The tasks report what they see from inside: their process id and the most
tasks that ran at once in that process.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

import fanout
import fanout.serialization
from fanout import errors
from fanout.config import ClientConfig
from fanout.dispatch import pools as pools_module
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.pools import Pools, WorkerFactory, WorkerProcess
from fanout.dispatch.process_backend import ProcessBackend
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from tests.conftest import TASKS_FILE, Tenant
from tests.helpers import LoopThread, eventually


def task(name: str) -> fanout.Task[Any, Any]:
    return load_task(f"file:{TASKS_FILE}:{name}")


def start(tenant: Tenant, name: str, *args: object) -> fanout.Run:
    return start_run(tenant.client, task(name), *args)


def worker_pids(dispatcher: Dispatcher, loop_thread: LoopThread) -> list[int]:
    async def read() -> list[int]:
        return dispatcher.pools.worker_pids()

    return loop_thread.run(read())


def test_a_reusable_environment_runs_2000_children_on_at_most_its_replicas(
    tenant: Tenant, dispatcher: Dispatcher
) -> None:
    results = start(tenant, "pooled_fan", 2000).wait(120).outputs()
    assert len(results) == 2000
    pids = {pid for pid, _ in results}
    assert 1 <= len(pids) <= 2  # replicas=2
    assert os.getpid() not in pids


def test_a_worker_runs_no_more_than_its_concurrency_at_once(tenant: Tenant, dispatcher: Dispatcher) -> None:
    results = start(tenant, "narrow_fan", 40, 0.05).wait(60).outputs()
    assert len({pid for pid, _ in results}) == 1  # replicas=1
    peak = max(seen for _, seen in results)
    assert 2 <= peak <= 4  # concurrency=4: used, never exceeded


def test_idle_workers_stop_after_idle_ttl(tenant: Tenant, dispatcher: Dispatcher, loop_thread: LoopThread) -> None:
    results = start(tenant, "narrow_fan", 8, 0.0).wait(60).outputs()
    pid = results[0][0]
    eventually(lambda: pid not in worker_pids(dispatcher, loop_thread), timeout=15)  # idle_ttl=1
    eventually(lambda: not Path(f"/proc/{pid}").exists(), timeout=15)


def test_an_action_without_a_reuse_policy_runs_in_a_process_of_its_own(tenant: Tenant, dispatcher: Dispatcher) -> None:
    pids = start(tenant, "own_pid_fan", 6).wait(60).outputs()
    assert len(set(pids)) == 6


def test_a_timeout_cancels_the_task_inside_its_worker(tenant: Tenant, dispatcher: Dispatcher, tmp_path: Path) -> None:
    marker = tmp_path / "timeout"
    assert start(tenant, "timeout_probe", str(marker)).wait(60).outputs() == "TIMED_OUT: Timeout"
    assert marker.read_text() == "cancelled"  # the task saw CancelledError: its worker was not killed
    assert Path(f"/proc/{marker.with_suffix('.pid').read_text()}").exists()


def test_an_abort_cancels_the_task_inside_its_worker(tenant: Tenant, dispatcher: Dispatcher, tmp_path: Path) -> None:
    marker = tmp_path / "abort"
    run = start(tenant, "abort_probe", str(marker))
    eventually(lambda: Path(str(marker) + ".pid").exists(), timeout=30)
    tenant.client.abort_run(run.name, "test")
    eventually(lambda: marker.exists() and marker.read_text() == "cancelled", timeout=15)
    assert run.wait(30).phase == "ABORTED"
    assert Path(f"/proc/{Path(str(marker) + '.pid').read_text()}").exists()  # the worker lives on


def test_a_worker_holds_no_platform_secret(tenant: Tenant, dispatcher: Dispatcher) -> None:
    env = start(tenant, "environment_of_worker").wait(60).outputs()
    assert "FANOUT_TOKEN" not in env
    assert "FANOUT_REDIS_URL" not in env
    assert not [name for name, value in env.items() if dispatcher.config.token in value]
    assert env["FANOUT_ENDPOINT"]


def test_new_work_goes_around_a_worker_whose_event_loop_is_held(
    tenant: Tenant, dispatcher: Dispatcher, loop_thread: LoopThread
) -> None:
    holder = start(tenant, "holds_its_workers_loop", 5.0)
    eventually(lambda: tenant.client.get_action(holder.name, "root").phase == pb.RUNNING, timeout=30)
    time.sleep(0.5)  # the task holds its worker's loop from just after it said it runs
    # Sent to the held worker, the only one (replicas=2, concurrency=64: nothing else starts a second);
    # it has answered all it was sent so far.
    first = start(tenant, "pid_of_worker")
    time.sleep(0.2)  # over BUSY_SECONDS without a word from it
    second = start(tenant, "pid_of_worker")

    pid = second.wait(30).outputs()
    assert tenant.client.get_action(holder.name, "root").phase == pb.RUNNING  # it ran meanwhile, elsewhere
    held = holder.wait(30).outputs()
    assert pid != held
    assert first.wait(30).outputs() == held  # the first waited for the held worker's turn to end


def test_a_reusable_worker_runs_its_actions_on_uvloop(tenant: Tenant, dispatcher: Dispatcher) -> None:
    # uvloop is a dependency on this platform: a worker on asyncio's own loop is a lost dependency.
    assert start(tenant, "loop_of_worker").wait(60).outputs().startswith("uvloop")


def test_a_reuse_policy_travels_in_the_spec() -> None:
    spec = task("pooled_pid").spec("x", b"")
    assert spec.environment == "pool_env"
    assert spec.reuse == pb.ReusePolicy(replicas=2, concurrency=64, idle_ttl_seconds=1)
    assert not task("own_pid").spec("y", b"").HasField("reuse")


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (pb.ReusePolicy(replicas=0, concurrency=1), "reuse.replicas"),
        (pb.ReusePolicy(replicas=1, concurrency=0), "reuse.concurrency"),
        (pb.ReusePolicy(replicas=1000, concurrency=1), "reuse.replicas"),
        (pb.ReusePolicy(replicas=1, concurrency=1, idle_ttl_seconds=-1), "reuse.idle_ttl_seconds"),
        (pb.ReusePolicy(replicas=1, concurrency=1, idle_ttl_seconds=float("nan")), "reuse.idle_ttl_seconds"),
    ],
)
def test_a_reuse_policy_out_of_bounds_is_refused_and_creates_nothing(
    tenant: Tenant, policy: pb.ReusePolicy, field: str
) -> None:
    spec = pb.ActionSpec(task_ref="module:m:f", reuse=policy)
    with pytest.raises(errors.InvalidRequest, match=field):
        tenant.client.create_run(spec, run_name="bad-reuse")
    with pytest.raises(errors.NotFound):
        tenant.client.get_run("bad-reuse")


def test_action_processes_are_bounded_and_a_waiting_parent_gives_its_room_back(tmp_path: Path) -> None:
    """The dispatcher's capacity is sized for pools; the process backend bounds processes apart."""
    backend = ProcessBackend(tmp_path / "actions", max_processes=1)
    started: list[str] = []

    def leased(name: str) -> dpb.LeasedAction:
        spec = pb.ActionSpec(name=name, command=["sleep", "0.2"])
        return dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=1)

    async def main() -> None:
        parent, child = leased("parent"), leased("child")
        first = asyncio.create_task(backend.run(parent, "unused:1", lambda: started.append("parent")))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(backend.run(child, "unused:1", lambda: started.append("child")))
        await asyncio.sleep(0.05)
        assert started == ["parent"]  # one process at a time
        backend.waiting(parent)  # the parent now waits on its children: its room goes to them
        await asyncio.sleep(0.05)
        assert started == ["parent", "child"]
        await asyncio.gather(first, second)
        await backend.shutdown()

    asyncio.run(main())


SYNC_TASKS_FILE = Path(__file__).parent.parent / "tasks" / "sync_tasks.py"


def sync_task(name: str) -> fanout.Task[Any, Any]:
    return load_task(f"file:{SYNC_TASKS_FILE}:{name}")


def test_a_worker_runs_as_many_plain_def_tasks_at_once_as_its_concurrency(
    tenant: Tenant, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    # 8 (the pool's concurrency) blocking tasks that each return only once all 8 are running: more than
    # the 6 threads Python's default pool would have on this 2-core machine.
    pids = start_run(tenant.client, sync_task("meet_fan"), str(tmp_path), 8).wait(90).outputs()
    assert len(pids) == 8
    assert len(set(pids)) == 1  # one worker (replicas=1), eight threads


def test_a_blocking_plain_task_does_not_stall_the_async_tasks_of_its_worker(
    tenant: Tenant, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    # block_until waits for a file that only release, an async task of the same worker, creates.
    blocked, released = start_run(tenant.client, sync_task("block_and_release"), str(tmp_path / "m")).wait(90).outputs()
    assert blocked == released


def test_plain_def_tasks_run_as_actions_of_their_own_and_may_call_tasks(tenant: Tenant, dispatcher: Dispatcher) -> None:
    assert start_run(tenant.client, sync_task("double_each"), 4).wait(90).outputs() == [0, 2, 4, 6]


def test_a_plain_def_task_called_outside_an_action_runs_here() -> None:
    assert sync_task("double")(21) == 42


def test_a_reusable_workers_log_keeps_a_bounded_tail_however_much_its_tasks_print(tmp_path: Path) -> None:
    from fanout.config import ClientConfig
    from fanout.dispatch.pools import Pools
    from fanout.dispatch.worker import LOG_KEEP_BYTES, LOG_LIMIT_BYTES

    task = sync_task("chatter")
    pools = Pools(ClientConfig(endpoint="127.0.0.1:1", token="unused"), log_dir=tmp_path / "logs")

    def leased(n: int) -> dpb.LeasedAction:
        spec = task.spec(f"chatter-{n}", fanout.serialization.encode_inputs("chatter", (30_000,), {}))
        return dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=1, action_token="unused")

    async def main() -> list[int]:
        try:
            # Two actions one after the other in one long-lived worker: 2 x 2.7 MB printed.
            sizes = []
            for n in range(2):
                outcome = await pools.run(leased(n), "127.0.0.1:1", lambda: None)
                assert outcome.phase == pb.SUCCEEDED, outcome.result.error
                sizes.append(int(fanout.serialization.decode_output(outcome.result.outputs)))
            return sizes
        finally:
            await pools.shutdown()

    sizes = asyncio.run(main())
    assert all(size <= LOG_LIMIT_BYTES for size in sizes), sizes
    [log_file] = (tmp_path / "logs").iterdir()
    text = log_file.read_text()
    assert LOG_KEEP_BYTES // 2 <= len(text) <= LOG_LIMIT_BYTES
    assert text.endswith("line 00029999 " + "x" * 80 + "\nthe last line\n")  # the tail is what is kept


def child_phases(tenant: Tenant, run: str, children: int) -> dict[str, list[int]]:
    """Every phase each child of the root went through, from the run's events."""
    seen: dict[str, list[int]] = {}
    for event in tenant.client.watch_children(run, "root", cursor="0-0"):
        seen.setdefault(event.update.name, []).append(event.update.phase)
        if sum(1 for phases in seen.values() if phases[-1] == pb.SUCCEEDED) == children:
            return seen
    raise AssertionError(f"the watch ended early: {seen}")


def test_a_pooled_child_shows_running_only_if_it_runs_past_its_first_step(
    tenant: Tenant, dispatcher: Dispatcher
) -> None:
    # A no-op is done in its first step: its worker never says it runs, so no RUNNING report is
    # made for it (the hot path of a big fanout). One that awaits something shows RUNNING first.
    run = start(tenant, "echoes_and_naps", 3, 0.3)
    assert run.wait(60).outputs() == [0, 1, 2, 0, 1, 2]

    seen = child_phases(tenant, run.name, 6)
    echoes = [phases for name, phases in seen.items() if name.startswith("pooled_echo")]
    naps = [phases for name, phases in seen.items() if name.startswith("pooled_nap")]
    assert echoes == [[pb.SUCCEEDED]] * 3, seen
    assert naps == [[pb.RUNNING, pb.SUCCEEDED]] * 3, seen


class OlderWorker(WorkerProcess):
    """A real worker process that is taken not to name its running actions, as a worker of an
    earlier release would not (its ready frame without tells_running)."""

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await super()._connect(reader, writer)
        self.tells_running = False


def pooled(name: str, task: str, inputs: bytes) -> dpb.LeasedAction:
    reuse = pb.ReusePolicy(replicas=1, concurrency=4, idle_ttl_seconds=30)
    spec = pb.ActionSpec(name=name, task_ref=f"file:{TASKS_FILE}:{task}", inputs=inputs, reuse=reuse)
    return dpb.LeasedAction(tenant="t", run="r", spec=spec, attempt=1, action_token="unused")


def run_in_a_pool(new_worker: WorkerFactory, *actions: dpb.LeasedAction) -> list[tuple[str, str]]:
    """Run leaf actions in one pool; what happened, in order: (name, "started" | "running" | "ended")."""

    async def main() -> list[tuple[str, str]]:
        # Leaf tasks: they never call the control plane, so nothing listens at this endpoint.
        pools = Pools(ClientConfig(endpoint="127.0.0.1:1", token="unused"), new_worker=new_worker)
        seen: list[tuple[str, str]] = []

        async def one(action: dpb.LeasedAction) -> None:
            name = action.spec.name
            started, running = lambda: seen.append((name, "started")), lambda: seen.append((name, "running"))
            outcome = await pools.run(action, "127.0.0.1:1", started, running)
            assert outcome.phase == pb.SUCCEEDED, outcome
            seen.append((name, "ended"))

        try:
            await asyncio.gather(*(one(action) for action in actions))
        finally:
            await pools.shutdown()
        return seen

    return asyncio.run(main())


@pytest.mark.parametrize(("new_worker", "said_running"), [(WorkerProcess, ["nap"]), (OlderWorker, ["echo", "nap"])])
def test_running_is_said_by_the_worker_or_for_an_older_one_once_sent(
    new_worker: WorkerFactory, said_running: list[str]
) -> None:
    seen = run_in_a_pool(
        new_worker,
        pooled("echo", "pooled_echo", b'{"args":[7],"kwargs":{}}'),
        pooled("nap", "pooled_nap", b'{"args":[8,0.2],"kwargs":{}}'),
    )
    # Both sent to the worker (the admission-to-start metric counts both); RUNNING as said.
    assert sorted(name for name, what in seen if what == "started") == ["echo", "nap"]
    assert sorted(name for name, what in seen if what == "running") == said_running
    assert sorted(name for name, what in seen if what == "ended") == ["echo", "nap"]


def test_an_action_blocking_its_workers_loop_is_running_once_unheard_of_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CPU-bound code with no await holds the worker's loop in its first step: the worker cannot
    # say it runs, so the pool says it after UNTOLD_RUNNING_SECONDS, while it still runs.
    monkeypatch.setattr(pools_module, "UNTOLD_RUNNING_SECONDS", 0.2)
    seen = run_in_a_pool(WorkerProcess, pooled("block", "pooled_block", b'{"args":[1.5],"kwargs":{}}'))
    assert seen == [("block", "started"), ("block", "running"), ("block", "ended")]
