"""A `fanout dispatcher --backend docker` SIGKILLed mid-fanout, then restarted on the same work directory.

The killed dispatcher's containers outlive it; the restarted one finds them by
their owner label and removes them before leasing anything, the lapsed
actions run again in new containers, and every action ends exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from fanout.dispatch.backends import owner_of
from fanout.dispatch.containers import LABEL_OWNER, LABEL_RUN
from fanout.runs import start_run
from fanout.runtime import load_task
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from tests.conftest import make_tenant
from tests.containers.conftest import TASKS_FILE
from tests.helpers import LoopThread, eventually, running_children, terminal_events

FANOUT = str(Path(sys.executable).parent / "fanout")

pytestmark = pytest.mark.e2e


def dispatcher(endpoint: str, token: str, work_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [FANOUT, "dispatcher", "--backend", "docker", "--endpoint", endpoint, "--work-dir", str(work_dir)],
        env={**os.environ, "FANOUT_TOKEN": token},  # never a secret on a command line
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def containers(engine: docker.DockerClient, *, running: bool, **labels: str) -> set[str]:
    filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
    return {c["Names"][0].lstrip("/") for c in engine.api.containers(all=not running, filters=filters)}


def test_a_killed_docker_dispatcher_leaves_no_container_and_every_action_ends_once(
    engine: docker.DockerClient, loop_thread: LoopThread, own_plane: ControlPlane, tmp_path: Path
) -> None:
    endpoint = f"127.0.0.1:{own_plane.port}"
    tenant = make_tenant(loop_thread, own_plane, endpoint, prefix="restart")
    token = loop_thread.run(own_plane.tokens.create("dispatcher"))
    work_dir = tmp_path / "actions"
    owner = owner_of(work_dir)
    first = dispatcher(endpoint, token, work_dir)
    second = None
    try:
        run = start_run(tenant.client, load_task(f"file:{TASKS_FILE}:sleepy_fan"), 6, 4.0)
        eventually(lambda: running_children(tenant.client, run.name) >= 3, timeout=90)
        first.send_signal(signal.SIGKILL)
        first.wait()
        left = containers(engine, running=False, **{LABEL_OWNER: owner})
        assert len(left) >= 4  # the root and its running children outlived their dispatcher

        second = dispatcher(endpoint, token, work_dir)

        # Before it runs anything, the restarted dispatcher removes what the first one left.
        eventually(lambda: not left & containers(engine, running=False, **{LABEL_OWNER: owner}), timeout=60)
        assert run.wait(timeout=150).outputs() == [4.0 + i / 1000 for i in range(6)]
        counts = terminal_events(tenant.client, run.name, "root", 6)
        assert sorted(counts.values()) == [1] * 6
        assert tenant.client.get_action(run.name, "root").phase == pb.SUCCEEDED
        eventually(lambda: not containers(engine, running=False, **{LABEL_RUN: run.name}), timeout=30)
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        assert containers(engine, running=False, **{LABEL_OWNER: owner}) == set()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        engine_leftovers = containers(engine, running=False, **{LABEL_OWNER: owner})
        if engine_leftovers:  # a failed run of this test must not leave containers to the next
            for name in engine_leftovers:
                engine.api.remove_container(name, force=True)
        tenant.client.close()
