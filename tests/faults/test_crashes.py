"""Crashes: SIGKILL a dispatcher or a server mid-run; every action still ends exactly once.

Everything here is a real process: a Redis with append-only persistence,
two `fanout server` processes on one Redis, and `fanout dispatcher`
processes that the tests kill and replace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

import fanout
from fanout import errors, serialization
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.quota import keys
from fanout.runtime import load_task
from fanout.server.redis_process import RedisProcess, free_port
from fanout.v1 import actions_pb2 as pb
from tests.conftest import TASKS_FILE
from tests.helpers import DEV, eventually, running_children, terminal_events

FANOUT = str(Path(sys.executable).parent / "fanout")
LEASE_SECONDS = "3"

pytestmark = pytest.mark.e2e


class Server:
    def __init__(self, redis_url: str, admin_token_file: Path, port: int = 0) -> None:
        self.port = port or free_port()
        self.redis_url = redis_url
        self.admin_token_file = admin_token_file
        self.proc: subprocess.Popen[str] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = {
            "PATH": "/usr/bin:/bin",
            "FANOUT_LEASE_SECONDS": LEASE_SECONDS,
            "FANOUT_REAP_INTERVAL_SECONDS": "0.3",
            "FANOUT_REDIS_URL": self.redis_url,  # it may carry a password: never on a command line
            # Every server of one deployment signs action tokens with the same key.
            "FANOUT_SIGNING_KEY_FILE": str(self.admin_token_file.parent / "signing-key"),
        }
        self.proc = subprocess.Popen(
            [FANOUT, "server", "--listen", self.endpoint, "--metrics-port", "-1",
             "--admin-token-file", str(self.admin_token_file)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        while "listening" not in (line := self.proc.stdout.readline()):
            assert line, "fanout server exited before it was ready"
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc.communicate()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc.communicate()


@dataclass
class Cluster:
    redis: redis.Redis
    servers: list[Server]
    tenant: str
    tenant_token: str
    dispatcher_token: str
    admin_token: str
    work: Path

    def dispatcher(self, server: Server, capacity: int = 16) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            # Trusting: some of these actions are shell commands (the crashes, not isolation, are the subject).
            [FANOUT, "dispatcher", *DEV, "--trust-tenants", "--endpoint", server.endpoint,
             "--capacity", str(capacity), "--work-dir", str(self.work)],
            env={**os.environ, "FANOUT_TOKEN": self.dispatcher_token},  # never a secret on a command line
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def client(self, server: Server) -> Client:
        return Client(ClientConfig(endpoint=server.endpoint, token=self.tenant_token))

    def start(self, server: Server, task: str, *args: object) -> fanout.Run:
        fanout.init(endpoint=server.endpoint, token=self.tenant_token)
        return fanout.run(load_task(f"file:{TASKS_FILE}:{task}"), *args)

    def usage(self) -> tuple[int, int, int]:
        """(queued, slots held, leases held) as Redis counts them."""
        k = keys.TenantKeys(self.tenant)
        return int(self.redis.hget(k.stats, "queued") or 0), self.redis.scard(k.slots), self.redis.zcard(k.leased)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    store = RedisProcess(base / "redis").start()
    token_file = base / "admin-token"
    servers = [Server(store.url, token_file).start(), Server(store.url, token_file).start()]
    with Client(ClientConfig(endpoint=servers[0].endpoint, token=token_file.read_text().strip())) as admin:
        tenant = admin.create_tenant("crash")
        dispatcher_token = admin.create_token("dispatcher")
    client = redis.Redis.from_url(store.url)
    yield Cluster(
        client, servers, tenant.tenant, tenant.token, dispatcher_token, token_file.read_text().strip(), base / "actions"
    )
    client.close()
    for server in servers:
        server.stop()
    store.stop()


def test_a_killed_dispatchers_actions_run_again_and_end_once(cluster: Cluster) -> None:
    first = cluster.dispatcher(cluster.servers[0])
    second = None
    try:
        run = cluster.start(cluster.servers[1], "sleepy_fan", 6, 2.0)
        with cluster.client(cluster.servers[1]) as client:
            eventually(lambda: running_children(client, run.name) >= 3, timeout=30)
            first.send_signal(signal.SIGKILL)
            first.wait()
            second = cluster.dispatcher(cluster.servers[0])

            assert run.wait(timeout=90).outputs() == [0, 1, 2, 3, 4, 5]
            counts = terminal_events(client, run.name, "root", 6)
            assert sorted(counts.values()) == [1] * 6
            root = client.get_action(run.name, "root")
            assert root.attempt == 2  # the root ran again too, and found its children by name
            assert client.get_run(run.name).action_count == 7  # resubmitted children were not charged again
        eventually(lambda: cluster.usage() == (0, 0, 0), timeout=10)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_killed_server_is_replaced_and_the_run_finishes(cluster: Cluster) -> None:
    victim = cluster.servers[0]
    dispatcher = cluster.dispatcher(victim)
    try:
        run = cluster.start(cluster.servers[1], "sleepy_fan", 5, 1.5)
        with cluster.client(cluster.servers[1]) as client:
            eventually(lambda: running_children(client, run.name) >= 2, timeout=30)
            victim.kill()
            victim.start()  # same port: the dispatcher and the actions reconnect

            assert run.wait(timeout=90).outputs() == [0, 1, 2, 3, 4]
            assert sorted(terminal_events(client, run.name, "root", 5).values()) == [1] * 5
        eventually(lambda: cluster.usage() == (0, 0, 0), timeout=10)
    finally:
        dispatcher.kill()
        dispatcher.wait()


def test_waiting_parents_do_not_fill_a_small_dispatcher(cluster: Cluster) -> None:
    # Root plus three waiting parents exceed a capacity of 2; only the
    # heartbeat's "waiting" answers give that capacity back.
    dispatcher = cluster.dispatcher(cluster.servers[0], capacity=2)
    try:
        run = cluster.start(cluster.servers[0], "nested", 3, 2)
        assert run.wait(timeout=90).outputs() == 13
    finally:
        dispatcher.kill()
        dispatcher.wait()


def test_submitters_spread_over_two_servers_never_over_admit(cluster: Cluster) -> None:
    with cluster.client(cluster.servers[0]) as first:
        run = first.create_run(pb.ActionSpec(task_ref="m:x:y", command=["true"]), run_name="race-two-servers")
    admitted: list[int] = []
    lock = threading.Lock()

    def submitter(worker: int) -> None:
        with cluster.client(cluster.servers[worker % 2]) as client:
            for attempt in range(20):
                batch = [pb.ActionSpec(name=f"w{worker}-{attempt}-{i}", task_ref="m:x:y") for i in range(7)]
                try:
                    got = client.submit_batch(run.name, "root", batch).admitted
                except errors.FanoutLimitExceeded:
                    continue
                with lock:
                    admitted.append(got)

    with cluster.client(cluster.servers[0]) as admin_view:
        limit = 1 + 7 * 30  # the root and thirty batches, of the 160 offered
        with Client(ClientConfig(endpoint=cluster.servers[0].endpoint, token=cluster.admin_token)) as admin:
            admin.set_limits(cluster.tenant, "race test", max_fanout=limit)
        threads = [threading.Thread(target=submitter, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = admin_view.get_run(run.name).action_count

    assert held == 1 + sum(admitted) == limit


def output(result: pb.ActionResult) -> int:
    return int(serialization.decode_output(result.outputs))


def children(client: Client, run: str, parent: str) -> list[pb.ActionStatus]:
    out: list[pb.ActionStatus] = []
    for event in client.watch_children(run, parent):
        if event.HasField("replay_done"):
            return out
        out.append(event.update)
    return out


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def test_a_restarted_dispatcher_reports_finished_work_instead_of_running_it_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Child 0 freezes the dispatcher as it finishes: the children finishing
    # from then on write their result file, but no report leaves. Then the
    # dispatcher is killed and another starts on the same work directory.
    logs = tmp_path / "executions"
    logs.mkdir()
    first = cluster.dispatcher(cluster.servers[0], capacity=8)
    second = None
    try:
        run = cluster.start(cluster.servers[1], "logged_fan", str(logs), 20, 0.5, first.pid)
        eventually(lambda: process_state(first.pid) == "T", timeout=60)
        run_folder = cluster.work / cluster.tenant / run.name

        def unreported() -> set[int]:
            """Children whose result is on disk, not yet reported (or reported, not yet answered)."""
            results = [f / "result.pb" for f in run_folder.iterdir() if (f / "spec.pb").exists()]
            return {output(pb.ActionResult.FromString(r.read_bytes())) for r in results if r.exists()}

        def children_settled() -> set[int]:
            # Every child that started has finished: its result is on disk or with the server.
            with cluster.client(cluster.servers[1]) as client:
                reported = {output(c.result) for c in children(client, run.name, "root") if c.phase == pb.SUCCEEDED}
            on_disk = unreported()
            started = {int(log.name) for log in logs.iterdir()}
            assert started <= reported | on_disk, "children still running"
            return on_disk

        finished_xs = eventually(children_settled, timeout=30)
        assert 0 in finished_xs
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = cluster.dispatcher(cluster.servers[0], capacity=8)

        assert run.wait(timeout=90).outputs() == list(range(20))
        executions = {x: len((logs / str(x)).read_text().splitlines()) for x in range(20)}
        assert {x: executions[x] for x in finished_xs} == dict.fromkeys(finished_xs, 1)
        eventually(lambda: cluster.usage() == (0, 0, 0), timeout=10)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for init, which may be slow)."""
    try:
        return process_state(pid) not in ("Z", "X")
    except FileNotFoundError:
        return False


def pids_in(path: Path, count: int) -> list[int]:
    found = [int(pid) for pid in path.read_text().split()] if path.exists() else []
    assert len(found) == count, found
    return found


def test_a_killed_dispatchers_actions_leave_no_process_behind(cluster: Cluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    script = f"sleep 30 & echo $! >> {pid_file}; echo $$ >> {pid_file}; sleep 30; echo done"
    dispatcher = cluster.dispatcher(cluster.servers[0])
    try:
        with cluster.client(cluster.servers[0]) as client:
            run = client.create_run(pb.ActionSpec(task_ref="tree", command=["sh", "-c", script]))
            started = eventually(lambda: pids_in(pid_file, 2), timeout=30)
            # Reported RUNNING means the dispatcher's guard holds its pid (see process_backend.run).
            eventually(lambda: client.get_action(run.name, run.root).phase == pb.RUNNING, timeout=30)
            dispatcher.send_signal(signal.SIGKILL)
            dispatcher.wait()

            eventually(lambda: not any(alive(pid) for pid in started), timeout=3)
            client.abort_run(run.name)
    finally:
        if dispatcher.poll() is None:
            dispatcher.kill()
            dispatcher.wait()
