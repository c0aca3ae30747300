"""Run `fanout` subcommands as child processes and wait for their ready line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def fanout_cmd(*args: str) -> list[str]:
    """The `fanout` CLI of this interpreter's environment."""
    return [sys.executable, "-m", "fanout.cli.main", *args]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without FANOUT_* variables, so a user's settings don't skew the figures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    return {**env, **extra}


@contextmanager
def running(cmd: list[str], log_dir: Path, ready: str, env: dict[str, str]) -> Iterator[re.Match[str]]:
    """Start `cmd`, yield the match of the `ready` pattern on its stdout, then SIGTERM it and wait."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out, err = log_dir / "stdout.log", log_dir / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env)
    try:
        yield _wait_ready(proc, out, err, re.compile(ready))
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], out: Path, err: Path, ready: re.Pattern[str]) -> re.Match[str]:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        match = ready.search(out.read_text(errors="replace"))
        if match:
            return match
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"not ready in {READY_TIMEOUT}s" if proc.returncode is None else f"exited with {proc.returncode}"
            raise RuntimeError(f"{proc.args!r} {state}:\n{err.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
