"""`fanout up` as a user runs it: a subprocess, the example through it, a clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fanout.client import Client
from fanout.config import ClientConfig
from fanout.runs import Run, start_run
from fanout.runtime import load_task
from fanout.server.redis_process import RedisProcess
from fanout.v1 import actions_pb2 as pb
from tests.conftest import TASKS_FILE
from tests.helpers import DEV, eventually

ROOT = Path(__file__).resolve().parents[2]
FANOUT = str(Path(sys.executable).parent / "fanout")

pytestmark = pytest.mark.e2e


def processes_working_in(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory` (Redis runs in its --dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == directory.resolve():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def start_up(data: Path, env: dict[str, str] | None = None, *flags: str) -> subprocess.Popen[str]:
    """`fanout up` on a free port, returned once it says it is ready."""
    proc = subprocess.Popen(
        [FANOUT, "up", "--data-dir", str(data), "--listen", "127.0.0.1:0", "--metrics-port", "-1", *DEV, *flags],
        cwd=data.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    assert ready.startswith("fanout is ready at "), ready + (proc.stderr.read() if proc.stderr else "")
    return proc


def client_for(data: Path) -> Client:
    """A tenant client from the config file that `fanout up` wrote."""
    cfg = yaml.safe_load((data / "config.yaml").read_text())
    return Client(ClientConfig(endpoint=cfg["endpoint"], token=cfg["token"]))


def stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    assert proc.wait(30) == 0
    proc.communicate()


def test_up_runs_the_example_and_stops_everything(tmp_path: Path) -> None:
    data = tmp_path / "state"
    result = subprocess.run(
        [
            FANOUT,
            "up",
            *DEV,
            "--data-dir",
            str(data),
            "--listen",
            "127.0.0.1:0",
            "--metrics-port",
            "-1",
            "--",
            sys.executable,
            "-P",
            "examples/fanout.py",
            "6",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("fanout is ready at 127.0.0.1:")
    run_name = lines[1]
    assert re.fullmatch(r"r[a-z0-9]{11}", run_name)
    assert lines[2].endswith(f"/runs/{run_name}")
    assert lines[3:] == [
        str({"user_id": i, "name": f"User_{i}", "score": i * 10, "data": f"Sample data for user {i}"})
        for i in range(1, 7)
    ]
    assert (data / "config.yaml").exists()
    assert (data / "redis" / "appendonlydir").is_dir() or (data / "redis" / "appendonly.aof").exists()
    assert processes_working_in(data / "redis") == [], "the private Redis must be stopped"


def test_up_serves_until_sigterm_and_the_state_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "state"

    proc = start_up(data)
    assert len(processes_working_in(data / "redis")) == 1
    with client_for(data) as c:
        run = c.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["true"]))
    stop(proc)
    assert processes_working_in(data / "redis") == []

    proc = start_up(data)
    try:
        with client_for(data) as c:
            assert c.get_run(run.name).name == run.name  # kept by Redis's append-only file
    finally:
        stop(proc, signal.SIGINT)


def test_cli_admin_and_tenant_commands(tmp_path: Path) -> None:
    data = tmp_path / "state"
    env = {**os.environ, "FANOUT_CONFIG": str(data / "config.yaml")}
    env.pop("FANOUT_TOKEN", None)
    env.pop("FANOUT_ENDPOINT", None)
    proc = start_up(data)
    try:

        def fanout(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [FANOUT, *args], env=env, cwd=tmp_path, input=stdin, capture_output=True, text=True, timeout=60,
                check=False,
            )  # fmt: skip

        changed = fanout("admin", "quota", "set", "default", "--max-fanout", "20", "--reason", "demo", "--json")
        assert changed.returncode == 0, changed.stderr
        assert '"max_fanout": 20' in changed.stdout
        audit = fanout("admin", "audit", "default")
        assert "max_fanout" in audit.stdout and "demo" in audit.stdout

        started = fanout(
            "run", str(ROOT / "tests" / "tasks" / "fanout_tasks.py"), "fan_squares", "4", "--wait", "--json"
        )
        assert started.returncode == 0, started.stderr
        assert '"outputs": [\n    0,\n    1,\n    4,\n    9\n  ]' in started.stdout

        # The task's parameters as flags, the way Flyte's CLI takes them, and its own --help.
        tasks = str(ROOT / "tests" / "tasks" / "fanout_tasks.py")
        flagged = fanout("run", tasks, "fan_squares", "--n", "3", "--wait", "--json")
        assert flagged.returncode == 0, flagged.stderr
        assert '"outputs": [\n    0,\n    1,\n    4\n  ]' in flagged.stdout
        helped = fanout("run", tasks, "fan_squares", "--help")
        assert helped.returncode == 0 and "--n VALUE" in helped.stdout and "int" in helped.stdout
        wrong = fanout("run", tasks, "fan_squares", "--m", "3")
        assert wrong.returncode == 2 and "unrecognized arguments: --m" in wrong.stderr
        missing = fanout("run", tasks, "fan_squares")
        assert missing.returncode == 2 and "missing a required argument: 'n'" in missing.stderr

        run_name = re.search(r'"run": "(\w+)"', started.stdout).group(1)  # type: ignore[union-attr]
        got = fanout("get", run_name)
        assert "SUCCEEDED" in got.stdout and "outputs: [0, 1, 4, 9]" in got.stdout
        watched = fanout("watch", run_name, "--parent", "root")
        assert watched.returncode == 0 and "4/4 finished" in watched.stdout

        aborted = fanout("abort", run_name)
        assert aborted.returncode == 0 and "already finished" in aborted.stdout

        quota = fanout("quota")
        assert quota.returncode == 0 and "max_fanout" in quota.stdout and "20" in quota.stdout

        created = fanout("admin", "token", "create", "--role", "tenant", "--tenant", "default")
        token = created.stdout.strip()
        token_id = re.search(r"token id ([0-9a-f]{12})", created.stderr).group(1)  # type: ignore[union-attr]
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        assert fanout("quota", "--token-file", str(token_file)).returncode == 0
        assert fanout("quota", "--token-file", "-", stdin=token).returncode == 0
        on_the_command_line = fanout("quota", "--token", token)
        assert on_the_command_line.returncode == 2 and "--token-file" in on_the_command_line.stderr
        listed = fanout("admin", "token", "list", "--tenant", "default")
        assert token_id in listed.stdout and token not in listed.stdout
        by_secret = fanout("admin", "token", "revoke", token)
        assert by_secret.returncode == 2 and "give the token's id" in by_secret.stderr
        assert fanout("admin", "token", "revoke", token_id).returncode == 0
        refused = fanout("quota", "--token-file", str(token_file))
        assert refused.returncode == 1 and "invalid or revoked token" in refused.stderr

        missing = fanout("get", "rnothere")
        assert missing.returncode == 1 and "not found" in missing.stderr
        no_reason = fanout("admin", "quota", "set", "default", "--max-fanout", "5")
        assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    finally:
        stop(proc)


def test_a_killed_up_takes_its_redis_with_it(tmp_path: Path) -> None:
    data = tmp_path / "state"
    proc = start_up(data)
    assert len(processes_working_in(data / "redis")) == 1

    proc.kill()
    proc.wait()
    proc.communicate()

    eventually(lambda: processes_working_in(data / "redis") == [], timeout=10)


def test_runs_in_flight_resume_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "state"
    quick_reclaim = {**os.environ, "FANOUT_LEASE_SECONDS": "2"}
    proc = start_up(data, quick_reclaim)
    with client_for(data) as c:
        run = start_run(c, load_task(f"file:{TASKS_FILE}:sleepy_fan"), 4, 3.0)
        eventually(lambda: c.get_run(run.name).action_count == 5)
    stop(proc)  # the children are mid-sleep

    proc = start_up(data, quick_reclaim)  # a new port: the config file says where
    try:
        with client_for(data) as c:
            resumed = Run(c, c.get_run(run.name))
            assert resumed.wait(timeout=60).outputs() == [0, 1, 2, 3]
            assert c.get_action(run.name, "root").attempt == 2
    finally:
        stop(proc)


def test_a_second_up_on_a_busy_port_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    first = start_up(tmp_path / "first")
    try:
        port = yaml.safe_load((tmp_path / "first" / "config.yaml").read_text())["endpoint"].rsplit(":", 1)[1]
        second = subprocess.run(
            [FANOUT, "up", *DEV, "--data-dir", str(tmp_path / "second"), "--listen", f"127.0.0.1:{port}",
             "--metrics-port", "-1"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in second.stderr
        assert "ready" not in second.stdout
    finally:
        stop(first)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_up_keeps_its_secrets_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "state"
    proc = start_up(data)
    try:
        assert mode(data) == 0o700
        for secret in ("config.yaml", "admin-token", "signing-key", "redis/password", "redis/redis.conf"):
            assert mode(data / secret) == 0o600, secret
        redis_dir = data / "redis"
        assert mode(redis_dir) == 0o700
        written = [p for p in redis_dir.rglob("*") if "appendonly" in p.name]
        assert written, "the private Redis keeps an append-only file"
        assert {(p.name, mode(p)) for p in written} == {(p.name, 0o700 if p.is_dir() else 0o600) for p in written}
    finally:
        stop(proc)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_no_secret_on_command_lines_or_in_what_actions_inherit(tmp_path: Path) -> None:
    store = RedisProcess(tmp_path / "redis").start()  # an outside Redis, with a password
    env = {**os.environ, "FANOUT_REDIS_URL": store.url}
    env.pop("FANOUT_TOKEN", None)
    proc = start_up(tmp_path / "state", env, "--trust-tenants")  # its action is a shell command
    dispatcher = None
    try:
        # An action that dumps everything it inherited.
        out = tmp_path / "inherited"
        with client_for(tmp_path / "state") as c:
            run = c.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["sh", "-c", f"env > {out}"]))
            eventually(lambda: c.get_run(run.name).phase == pb.SUCCEEDED)
        assert store.password not in out.read_text()
        assert store.password not in cmdline(proc.pid)

        admin = ["--token-file", str(tmp_path / "state" / "admin-token")]
        fanout_env = {**os.environ, "FANOUT_CONFIG": str(tmp_path / "state" / "config.yaml")}
        fanout_env.pop("FANOUT_TOKEN", None)
        made = subprocess.run(
            [FANOUT, "admin", "token", "create", "--role", "dispatcher", *admin],
            env=fanout_env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        token = made.stdout.strip()
        token_file = tmp_path / "dispatcher-token"
        token_file.write_text(token)
        endpoint = yaml.safe_load((tmp_path / "state" / "config.yaml").read_text())["endpoint"]
        base = [FANOUT, "dispatcher", *DEV, "--endpoint", endpoint, "--work-dir", str(tmp_path / "work")]

        old_form = subprocess.run([*base, "--token", token], capture_output=True, text=True, timeout=60, check=False)
        assert old_form.returncode == 2 and "--token-file" in old_form.stderr

        dispatcher = subprocess.Popen([*base, "--token-file", str(token_file)], env=fanout_env)
        eventually(lambda: "dispatcher" in cmdline(dispatcher.pid))
        assert token not in cmdline(dispatcher.pid)
        assert dispatcher.poll() is None
    finally:
        if dispatcher is not None:
            dispatcher.terminate()
            dispatcher.wait(30)
        stop(proc)
        store.stop()
