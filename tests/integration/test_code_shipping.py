"""Code reaches the worker as a bundle: a run started from a project the dispatcher cannot see still imports it.

The project is written to a temporary directory; the caller runs its script from another directory
(so neither its working directory nor the dispatcher's sys.path holds the project), creates the runs
and exits. Then the project directory is moved away, and only then a dispatcher starts on this
module's own control plane: whatever it imports comes from the bundle, or not at all.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fanout import serialization
from fanout.client import TERMINAL_PHASES
from fanout.config import ClientConfig
from fanout.dispatch.dispatcher import Dispatcher
from fanout.dispatch.process_backend import ProcessBackend
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant
from tests.helpers import LoopThread, eventually

TASKS = """
    import asyncio

    import fanout
    import helpers  # a sibling module: importable only from the project directory

    pool = fanout.TaskEnvironment("shipped-pool", reusable=fanout.ReusePolicy(replicas=1, concurrency=4))
    env = fanout.TaskEnvironment("shipped")


    @pool.task
    async def leaf(x: int) -> int:
        return helpers.double(x)


    @env.task
    async def root(n: int) -> dict:
        values = await asyncio.gather(*(leaf(i) for i in range(n)))
        return {"values": list(values), "helpers_file": helpers.__file__}
"""
HELPERS = """
    def double(x: int) -> int:
        return 2 * x
"""
START = """
    import fanout
    import tasks

    fanout.init()
    print(fanout.run(tasks.root, 3).name)
"""


def write_project(root: Path) -> Path:
    project = root / "project"
    (project / "src").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "shipped"\nversion = "0"\n')
    for name, text in {"tasks.py": TASKS, "helpers.py": HELPERS, "start.py": START}.items():
        (project / "src" / name).write_text(textwrap.dedent(text))
    return project


def start_run(project: Path, cwd: Path, tenant: Tenant, endpoint: str, ship: bool) -> str:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/"),
        "FANOUT_ENDPOINT": endpoint,
        "FANOUT_TOKEN": tenant.token,
        "FANOUT_CONFIG": os.devnull,
        "FANOUT_BUNDLE": "1" if ship else "0",
    }
    script = project / "src" / "start.py"
    done = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def finished_root(tenant: Tenant, run: str) -> pb.ActionStatus:
    def root() -> pb.ActionStatus | None:
        status = tenant.client.get_action(run, "root")
        return status if status.phase in TERMINAL_PHASES else None

    return eventually(root, timeout=60)


def test_a_run_imports_its_project_from_the_bundle_where_the_project_is_not(
    loop_thread: LoopThread,
    own_plane: ControlPlane,
    own_tenant: Tenant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = f"127.0.0.1:{own_plane.port}"
    project = write_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    unshipped = start_run(project, elsewhere, own_tenant, endpoint, ship=False)
    shipped = start_run(project, elsewhere, own_tenant, endpoint, ship=True)
    project.rename(tmp_path / "moved-away")  # from here on nobody can read the project where it was

    cache = tmp_path / "bundle-cache"
    monkeypatch.setenv("FANOUT_BUNDLE_CACHE", str(cache))
    token = loop_thread.run(own_plane.tokens.create("dispatcher"))
    dispatcher = Dispatcher(
        ClientConfig(endpoint=endpoint, token=token), ProcessBackend(tmp_path / "actions"), capacity=8
    )
    running = asyncio.run_coroutine_threadsafe(dispatcher.run(), loop_thread.loop)
    try:
        without = finished_root(own_tenant, unshipped)
        with_bundle = finished_root(own_tenant, shipped)
    finally:
        loop_thread.loop.call_soon_threadsafe(dispatcher.stop)
        running.result(30)

    # Without a bundle the worker has no way to the project: what every remote run met before bundles.
    assert without.phase == pb.FAILED
    assert without.result.error.type == "ModuleNotFoundError"
    assert "No module named 'tasks'" in without.result.error.message

    assert with_bundle.phase == pb.SUCCEEDED, with_bundle.result.error.traceback
    out = serialization.decode_output(with_bundle.result.outputs)
    assert out["values"] == [0, 2, 4]  # children in a reusable pool ran the shipped helpers too
    # The sibling module came from the bundle unpacked in the dispatcher's cache, under src/ as in the project.
    helpers_file = Path(out["helpers_file"])
    assert helpers_file.parent.parent.parent == cache
    assert helpers_file.parts[-2:] == ("src", "helpers.py")
