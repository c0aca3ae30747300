"""`fanout run --wait` shows the run as it goes: counts per phase, rate, the first failures; stdout keeps the result."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from fanout.dispatch.dispatcher import Dispatcher
from tests.conftest import TASKS_FILE, Tenant

FANOUT = str(Path(sys.executable).parent / "fanout")

pytestmark = pytest.mark.e2e


def env_for(tenant: Tenant, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    return {**env, "FANOUT_ENDPOINT": endpoint, "FANOUT_TOKEN": tenant.token, "FANOUT_CONFIG": os.devnull, **extra}


def test_without_a_terminal_it_ends_with_a_summary_and_the_failures(
    dispatcher: Dispatcher, tenant: Tenant, endpoint: str
) -> None:
    result = subprocess.run(
        [FANOUT, "run", str(TASKS_FILE), "gather_lenient", "--n", "6", "--wait"],
        env=env_for(tenant, endpoint), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    # The root and six children; the child for 3 failed, the root (return_exceptions) succeeded.
    assert "7/7 finished" in result.stderr
    assert "FAILED=1 SUCCEEDED=6" in result.stderr
    assert "error: ValueError: bad input 3" in result.stderr
    assert "\x1b[" not in result.stderr  # no terminal, no escape codes
    assert result.stdout.splitlines()[0].startswith("run ")
    assert json.loads(result.stdout.split("\n", 1)[1]) == [0, 1, 2, "ValueError: bad input 3", 4, 5]


def test_on_a_terminal_it_is_drawn_live(dispatcher: Dispatcher, tenant: Tenant, endpoint: str) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [FANOUT, "run", str(TASKS_FILE), "gather_lenient", "--n", "6", "--wait"],
        env=env_for(tenant, endpoint, TERM="xterm-256color", COLUMNS="120"),
        stdout=subprocess.PIPE, stderr=secondary, text=True,
    )  # fmt: skip
    os.close(secondary)
    drawn = bytearray()
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(primary)
    screen = drawn.decode(errors="replace")

    assert proc.returncode == 0, screen
    assert "\x1b[" in screen  # drawn, not printed
    assert "7/7 finished" in screen and "actions/s" in screen
    assert "failures" in screen and "bad input 3" in screen
    assert json.loads(out.split("\n", 1)[1]) == [0, 1, 2, "ValueError: bad input 3", 4, 5]
