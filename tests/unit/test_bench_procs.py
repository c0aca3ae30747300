"""bench/procs.py: the processes of a deployment are told apart by command line, and the CPU of
processes that came and went between two snapshots is counted (through their parent's reaped time)."""

from __future__ import annotations

import subprocess
import sys

from bench.procs import ProcCpu, cpu_by_kind, cpu_snapshot, kind_of
from tests.helpers import eventually

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_kinds_by_command_line() -> None:
    py = sys.executable
    assert kind_of(["/x/redis-server", "127.0.0.1:6379"], "") == "redis"
    assert kind_of([py, "-m", "fanout.cli.main", "server", "--listen", "x:0"], "") == "server"
    assert kind_of([py, "-m", "fanout.cli.main", "dispatcher", "--endpoint", "x:1"], "") == "dispatcher"
    assert kind_of([py, "-m", "fanout.cli.main", "up", "--data-dir", "d"], "") == "up (server + dispatcher)"
    assert kind_of([py, "-m", "fanout.dispatch.guard"], "dispatcher") == "guard"
    assert kind_of([py, "-m", "fanout.dispatch.forkserver"], "dispatcher") == "fork server"
    # A forked child keeps the zygote's command line: its parent says what it is.
    assert kind_of([py, "-m", "fanout.dispatch.forkserver"], "fork server") == "workers"
    assert kind_of([py, "-m", "fanout.dispatch.worker"], "dispatcher") == "workers"


def test_a_child_that_exited_between_snapshots_is_counted() -> None:
    root = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\ntime.sleep(0.5)\n"
            f"subprocess.run([sys.executable, '-c', {BURN!r}])\ntime.sleep(30)",
        ]
    )
    try:
        before = cpu_snapshot([root.pid])
        assert list(before) == [root.pid]  # the burner has not started yet

        def reaped() -> dict[int, ProcCpu]:
            after = cpu_snapshot([root.pid])
            assert after[root.pid].reaped_s >= 0.25
            return after

        after = eventually(reaped)
        by_kind = cpu_by_kind(before, after)
        assert by_kind.get("workers", 0.0) >= 0.25, by_kind  # the burner's 0.3 s, counted after it exited
    finally:
        root.kill()
        root.wait()
