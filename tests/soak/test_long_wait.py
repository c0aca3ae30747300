"""A run that takes minutes is waited on, watched and followed with no error and no warning.

Longer than every timer that could cut a quiet stream: the Redis socket
timeout, the watch's blocking read, gRPC keepalive (30 s) and the SDK's
reconnect budget (Run.wait gives up after 60 s of unreachability).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fanout
from fanout.runtime import load_task
from tests.conftest import TASKS_FILE, Tenant

FANOUT = str(Path(sys.executable).parent / "fanout")
SECONDS = 100.0

pytestmark = [pytest.mark.soak, pytest.mark.usefixtures("dispatcher")]


@pytest.mark.timeout(SECONDS + 120)
def test_a_root_of_100_seconds_is_waited_on_watched_and_followed_cleanly(tenant: Tenant, tmp_path: Path) -> None:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    # The root awaits one child that sleeps SECONDS: its own controller follows that child all along.
    run = fanout.run(load_task(f"file:{TASKS_FILE}:quiet_parent"), SECONDS)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "FANOUT_ENDPOINT": tenant.client.config.endpoint,
        "FANOUT_TOKEN": tenant.token,
    }
    # Two `fanout watch`: the run's root, and the root's one child.
    watches = [
        subprocess.Popen(
            [FANOUT, "watch", run.name, *extra],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ([], ["--parent", "root"])
    ]
    try:
        assert run.wait().phase == "SUCCEEDED"
        assert run.outputs() == [], "the parent's SDK logged warnings while following its child"
        for watch in watches:
            out, err = watch.communicate(timeout=30)
            assert (watch.returncode, err) == (0, ""), err
            assert out.strip() == "1/1 finished · SUCCEEDED=1"
    finally:
        for watch in watches:
            if watch.poll() is None:
                watch.kill()
                watch.communicate()
