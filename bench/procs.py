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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Started:
    pid: int
    ready: re.Match[str]


@contextmanager
def running(cmd: list[str], log_dir: Path, ready: str, env: dict[str, str]) -> Iterator[re.Match[str]]:
    """Start `cmd`, yield the match of the `ready` pattern on its stdout, then SIGTERM it and wait."""
    with started(cmd, log_dir, ready, env) as child:
        yield child.ready


@contextmanager
def started(cmd: list[str], log_dir: Path, ready: str, env: dict[str, str]) -> Iterator[Started]:
    """As `running`, yielding the child's pid too."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out, err = log_dir / "stdout.log", log_dir / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env)
    try:
        yield Started(proc.pid, _wait_ready(proc, out, err, re.compile(ready)))
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


# ---- CPU seconds by process kind, from /proc ----

TICKS = os.sysconf("SC_CLK_TCK")
# What a reaped child's CPU (a parent's cutime + cstime) counts as, by the parent's kind: Redis' children
# are its own forks (AOF rewrites); the dispatcher's and the fork server's are the actions and workers.
REAPED_KIND = {"redis": "redis", "server": "server"}
WORKERS = "workers"


@dataclass(frozen=True)
class ProcCpu:
    kind: str
    own_s: float  # the process's own user + system time, every thread
    reaped_s: float  # its waited-for children's (cutime + cstime)


def kind_of(cmdline: list[str], parent_kind: str) -> str:
    """A process of a Fanout deployment, by its command line (and its parent's kind for forked children)."""
    text = " ".join(cmdline)
    if cmdline and Path(cmdline[0]).name.startswith("redis-server"):
        return "redis"
    if "fanout.cli.main" in text or Path(cmdline[0] if cmdline else "").name == "fanout":
        sub = next((a for a in cmdline[1:] if a in ("up", "server", "dispatcher")), "")
        return {"up": "up (server + dispatcher)", "server": "server", "dispatcher": "dispatcher"}.get(sub, "client")
    if "fanout.dispatch.guard" in text:
        return "guard"
    # The zygote's forked children keep its command line: they are told apart by their parent.
    if "fanout.dispatch.forkserver" in text and parent_kind != "fork server":
        return "fork server"
    return WORKERS  # anything else a dispatcher starts runs actions


def cpu_snapshot(roots: list[int]) -> dict[int, ProcCpu]:
    """Every live process in the trees under `roots`, classified, with its CPU so far."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found: dict[int, ProcCpu] = {}
    todo = [(pid, "") for pid in roots]
    while todo:
        pid, parent_kind = todo.pop()
        stat = _stat(pid)
        if stat is None or pid in found:
            continue  # gone meanwhile: its CPU is in its parent's reaped time
        kind = kind_of(_cmdline(pid), parent_kind)
        utime, stime, cutime, cstime = (int(v) for v in stat[11:15])
        found[pid] = ProcCpu(kind, (utime + stime) / TICKS, (cutime + cstime) / TICKS)
        todo.extend((child, kind) for child in children.get(pid, []))
    return found


def cpu_by_kind(before: dict[int, ProcCpu], after: dict[int, ProcCpu]) -> dict[str, float]:
    """CPU seconds each kind used between two snapshots of the same trees.

    A process that exited in between is counted through its parent's reaped time
    (the parent waited for it, as asyncio and the fork server do), so the figure
    holds for actions that came and went between the snapshots.
    """
    totals: dict[str, float] = {}
    for sign, snapshot in ((-1.0, before), (1.0, after)):
        for proc in snapshot.values():
            totals[proc.kind] = totals.get(proc.kind, 0.0) + sign * proc.own_s
            reaped = REAPED_KIND.get(proc.kind, WORKERS)
            totals[reaped] = totals.get(reaped, 0.0) + sign * proc.reaped_s
    return {kind: round(seconds, 2) for kind, seconds in sorted(totals.items()) if abs(seconds) >= 0.005}


def self_cpu_s() -> float:
    """This process's own user + system CPU seconds (the benchmark's SDK client)."""
    stat = _stat(os.getpid())
    assert stat is not None
    return (int(stat[11]) + int(stat[12])) / TICKS


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on: the command name may hold spaces and parentheses."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
