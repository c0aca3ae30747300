"""Tenant isolation on the process backend, as root: what an action can read and what it inherits.

Real parts throughout: a Redis with a password, `fanout server` and `fanout dispatcher` as processes
of their own (the dispatcher reads its token from a file), and actions of two tenants run by that
dispatcher as real subprocesses, one-shot and in a pool of reusable workers. Each action reports
what it could read; the test asserts that the admin token, the dispatcher's token (its file and its
process's environment), the Redis password and the other tenant's files stay out of reach, that
each tenant runs under a uid of its own with a private home, and that the action's environment is
the scrubbed one. Only as root can a dispatcher give actions uids of their own, so the test fails,
and says why, when not run as root.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.procs import clean_env, fanout_cmd, started
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.dispatch.sandbox import FIRST_UID
from fanout.runs import Run, start_run
from fanout.runtime import load_task
from fanout.server.redis_process import RedisProcess
from fanout.v1 import actions_pb2 as pb

TASKS = """
import json, os, stat
from pathlib import Path

import fanout

own = fanout.TaskEnvironment(name="iso_own")
pooled = fanout.TaskEnvironment(
    name="iso_pool", reusable=fanout.ReusePolicy(replicas=1, concurrency=2, idle_ttl=30)
)
small_pool = fanout.TaskEnvironment(
    name="iso_small_pool",
    reusable=fanout.ReusePolicy(replicas=1, concurrency=1, idle_ttl=30),
    resources=fanout.Resources(memory="256Mi"),
)


def _try(path):
    try:
        if os.path.isdir(path):
            return "listed:" + ",".join(sorted(os.listdir(path)))
        return "read:" + Path(path).read_text(errors="replace")
    except PermissionError:
        return "denied"
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"error:{exc.errno}"


def _imports():
    # Modules no worker imports before it drops to the tenant's uid: found on its path after the drop.
    found = {}
    for name in ("colorsys", "cmath"):  # pure Python, and a C extension of the standard library
        try:
            found[name] = __import__(name).__name__
        except ImportError as exc:
            found[name] = f"{type(exc).__name__}: {exc}"
    return found


def _probe(paths, plant):
    home = os.environ.get("HOME", "")
    planted = []
    for folder in (home, os.getcwd()):
        target = Path(folder, "planted-secret.txt")
        target.write_text(plant)
        planted.append(str(target))
    def owner_and_mode(path):
        info = os.stat(path)
        return [info.st_uid, stat.S_IMODE(info.st_mode)]
    return json.dumps({
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "env": dict(os.environ), "home": home, "cwd": os.getcwd(),
        "home_owner_mode": owner_and_mode(home), "cwd_owner_mode": owner_and_mode(os.getcwd()),
        "planted": planted, "seen": {p: _try(p) for p in paths}, "imports": _imports(),
    })


@own.task
async def probe_own(paths: list, plant: str) -> str:
    return _probe(paths, plant)


@pooled.task
async def probe_pooled(paths: list, plant: str) -> str:
    return _probe(paths, plant)


@own.task
async def plant_and_fail(plant: str) -> str:
    # Leaves a secret in its log and its folder, then fails: a failed action's folder is kept.
    Path("planted-secret.txt").write_text(plant)
    print(plant, flush=True)
    raise RuntimeError(json.dumps({"cwd": os.getcwd()}))


@small_pool.task
async def hog(mib: int) -> int:
    block = bytearray(mib << 20)
    return len(block)
"""

# What a worker may inherit or be given (worker_env.py, process_backend.py, the pools); locale
# variables aside, anything else in an action's environment is a leak.
ALLOWED_ENV = {
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
    "FANOUT_ENDPOINT", "FANOUT_CONFIG", "FANOUT_TOKEN", "FANOUT_RUN", "FANOUT_ACTION", "FANOUT_ATTEMPT",
    "FANOUT_SPEC_PATH", "FANOUT_RESULT_PATH", "FANOUT_MAX_OUTPUT_BYTES", "FANOUT_WORKER_CONCURRENCY",
    "FANOUT_TLS_CA", "FANOUT_TLS_CERT", "FANOUT_TLS_KEY",
}  # fmt: skip
PLATFORM_SETTING = "FANOUT_PLATFORM_SECRET_SETTING"


@dataclass(frozen=True)
class Platform:
    base: Path
    endpoint: str
    admin_token: str
    dispatcher_token: str
    dispatcher_pid: int
    server_pid: int
    redis_password: str
    secrets: dict[str, Path]  # files an action must not read
    work_root: Path
    tasks: Path

    def client(self, token: str) -> Client:
        return Client(ClientConfig(endpoint=self.endpoint, token=token))


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    if os.geteuid() != 0:
        pytest.fail("tenant uids need a dispatcher running as root: run this test as root (CI does)")
    # Not pytest's tmp_path: its folders are root-only, and the tenants' uids must pass through to theirs.
    base = Path(tempfile.mkdtemp(prefix="fanout-isolation-"))
    base.chmod(0o755)
    try:
        state = base / "state"
        state.mkdir(mode=0o700)
        # The tenants' code in a project folder of its own: it is shipped as a bundle of that folder,
        # which must not hold the control plane's state beside it.
        project = base / "project"
        project.mkdir(mode=0o755)
        tasks = project / "isolation_tasks.py"
        tasks.write_text(TASKS)
        tasks.chmod(0o644)  # tenant code: readable by the tenants' uids
        with ExitStack() as stop:
            store = RedisProcess(state / "redis").start()
            stop.callback(store.stop)
            admin_file = state / "admin-token"
            env = clean_env(FANOUT_REDIS_URL=store.url, FANOUT_SIGNING_KEY_FILE=str(state / "signing-key"))
            server_cmd = fanout_cmd(
                "server", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--admin-token-file", str(admin_file)
            )
            server = stop.enter_context(started(server_cmd, base / "logs" / "server", r"listening on (\S+)", env))
            endpoint, admin_token = server.ready.group(1), admin_file.read_text().strip()
            with Client(ClientConfig(endpoint=endpoint, token=admin_token)) as admin:
                dispatcher_token = admin.create_token("dispatcher")
            token_file = state / "dispatcher-token"
            token_file.write_text(dispatcher_token)
            token_file.chmod(0o600)
            work_root = base / "dispatcher" / "actions"
            dispatcher_cmd = fanout_cmd(
                "dispatcher", "--endpoint", endpoint, "--token-file", str(token_file), "--work-dir", str(work_root)
            )  # fmt: skip
            # Platform settings in the dispatcher's environment: none may reach an action.
            dispatcher_env = {**env, PLATFORM_SETTING: "platform-only", "FANOUT_TOKEN": dispatcher_token}
            dispatcher = stop.enter_context(
                started(dispatcher_cmd, base / "logs" / "dispatcher", r"fanout dispatcher \S+", dispatcher_env)
            )
            yield Platform(
                base=base,
                endpoint=endpoint,
                admin_token=admin_token,
                dispatcher_token=dispatcher_token,
                dispatcher_pid=dispatcher.pid,
                server_pid=server.pid,
                redis_password=store.password,
                secrets={
                    "admin token": admin_file,
                    "dispatcher token file": token_file,
                    "signing key": state / "signing-key",
                    "dispatcher environment": Path(f"/proc/{dispatcher.pid}/environ"),
                    "server environment": Path(f"/proc/{server.pid}/environ"),
                },
                work_root=work_root,
                tasks=tasks,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def tenant(platform: Platform, name: str) -> str:
    with platform.client(platform.admin_token) as admin:
        admin.create_tenant(name)
        return admin.create_token("tenant", name)


def probe(platform: Platform, token: str, task: str, paths: list[str], plant: str) -> dict[str, Any]:
    with platform.client(token) as c:
        run = start_run(c, load_task(f"file:{platform.tasks}:{task}"), paths, plant).wait(120)
        report: dict[str, Any] = json.loads(run.outputs())
        return report


def failed_folder(platform: Platform, token: str) -> Path:
    """The folder of a failed action of the tenant, kept by the dispatcher (its log in it)."""
    with platform.client(token) as c:
        run = start_run(c, load_task(f"file:{platform.tasks}:plant_and_fail"), "a secret in a log").wait(120)
        error = c.get_action(run.name, "root").result.error
    assert error.type == "RuntimeError", error
    return Path(json.loads(error.message)["cwd"])


@pytest.mark.parametrize("task", ["probe_own", "probe_pooled"])
def test_an_action_reads_no_platform_secret_and_no_other_tenants_files(platform: Platform, task: str) -> None:
    alpha = tenant(platform, f"alpha-{task.replace('_', '-')}")
    beta = tenant(platform, f"beta-{task.replace('_', '-')}")
    mine = probe(platform, alpha, task, [], "alpha's secret")
    kept = failed_folder(platform, alpha)  # a failed action's folder stays, with its log

    # Beta tries alpha's files (as alpha's own actions reported them), the platform's secrets and the work root.
    alphas = [mine["planted"][0], mine["home"], str(kept), str(kept / "output.log"), str(kept / "result.pb")]
    targets = [*alphas, str(platform.work_root), *map(str, platform.secrets.values())]
    assert all(Path(path).exists() for path in targets)  # so "denied" below is not "missing" in disguise
    theirs = probe(platform, beta, task, targets, "beta's secret")

    assert theirs["seen"] == {path: "denied" for path in targets}, theirs["seen"]
    # Each tenant under a uid of its own, unprivileged and without groups, with a private home.
    assert mine["uid"] >= FIRST_UID and theirs["uid"] >= FIRST_UID and mine["uid"] != theirs["uid"]
    for report in (mine, theirs):
        assert report["euid"] == report["uid"] == report["gid"]
        assert report["groups"] in ([], [report["gid"]])
        assert report["home_owner_mode"] == [report["uid"], 0o700]
        assert report["cwd_owner_mode"] == [report["uid"], 0o700]  # its private folder (or home, in a pool)
        # The rest of the standard library stays importable after the drop, wherever the interpreter lives.
        assert report["imports"] == {"colorsys": "colorsys", "cmath": "cmath"}


@pytest.mark.parametrize("task", ["probe_own", "probe_pooled"])
def test_an_action_sees_a_scrubbed_environment(platform: Platform, task: str) -> None:
    report = probe(platform, tenant(platform, f"gamma-{task.replace('_', '-')}"), task, [], "gamma's secret")
    env: dict[str, str] = report["env"]

    assert set(env) <= ALLOWED_ENV, set(env) - ALLOWED_ENV
    assert PLATFORM_SETTING not in env and "FANOUT_REDIS_URL" not in env and "FANOUT_SIGNING_KEY_FILE" not in env
    values = "\n".join(env.values())
    for secret in (platform.dispatcher_token, platform.admin_token, platform.redis_password):
        assert secret not in values
    if task == "probe_own":  # a one-shot worker holds its action's token; a pooled one gets tokens per call
        assert env.get("FANOUT_TOKEN")


def test_an_untrusting_dispatcher_refuses_a_tenants_command(platform: Platform) -> None:
    admin_token = platform.secrets["admin token"]
    spec = pb.ActionSpec(task_ref="module:os:getcwd", command=["sh", "-c", f"cat {admin_token}"], workdir="/")
    with platform.client(tenant(platform, "delta")) as c:
        run = c.create_run(spec)
        Run(c, run).wait(60)
        root = c.get_action(run.name, "root")

    assert root.phase == pb.FAILED
    assert root.result.error.type == "UntrustedSpec"
    assert "--trust-tenants" in root.result.error.message
    assert root.attempt == 1  # not retried: it would be refused again


def test_a_pooled_worker_runs_under_its_environments_memory_limit(platform: Platform) -> None:
    with platform.client(tenant(platform, "epsilon")) as c:
        hog = load_task(f"file:{platform.tasks}:hog")
        fits = start_run(c, hog, 32).wait(120)
        assert fits.outputs() == 32 << 20
        too_big = start_run(c, hog, 1024).wait(120)
        root = c.get_action(too_big.name, "root")

    assert root.phase == pb.FAILED
    assert root.result.error.type == "MemoryError"  # the SDK raises it as errors.OOMError
