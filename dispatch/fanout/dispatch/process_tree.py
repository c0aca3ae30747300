"""Stop an action's whole process tree: its process group, its session and every descendant.

An action is the leader of its own session and process group, but what it
starts may leave both (`setsid sleep 30 &`), out of reach of killpg. So the
tree is found in /proc: every process in the action's group or session, and
every descendant of those by parent pid. Each is held by a pidfd, so a pid
reused meanwhile is never signalled. The tree is frozen (SIGSTOP) while it is
collected, so nothing forks past the collection; then it gets SIGTERM (and
SIGCONT), a short grace to exit cleanly, and SIGKILL for whatever is left.

A process that was orphaned before the stop (its parent already gone) and
left the session is out of reach: the kernel no longer links it to the
action. No cgroup is assumed to be writable here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
from collections import defaultdict
from pathlib import Path

TERM_GRACE_SECONDS = 1.0
# Collection rounds before signalling: each round finds what forked during the last.
MAX_ROUNDS = 10


async def stop_tree(root: int, grace: float = TERM_GRACE_SECONDS) -> None:
    """SIGTERM the tree under `root`, then SIGKILL what is left after `grace` seconds."""
    held: dict[int, int] = {}  # pid -> pidfd
    try:
        await asyncio.to_thread(_freeze, root, held)
        _signal(held, signal.SIGTERM)
        _signal(held, signal.SIGCONT)  # a stopped process acts on SIGTERM only once it runs
        await _wait_exits(held, grace)
        if _running(held):
            await asyncio.to_thread(_freeze, root, held)  # what forked during the grace
        _signal(held, signal.SIGKILL)
    finally:
        for fd in held.values():
            os.close(fd)


def kill_tree_now(root: int) -> None:
    """SIGKILL the tree under `root` at once (no grace), for paths that cannot wait."""
    held: dict[int, int] = {}
    try:
        _freeze(root, held)
        _signal(held, signal.SIGKILL)
    finally:
        for fd in held.values():
            os.close(fd)


def _freeze(root: int, held: dict[int, int]) -> None:
    """Hold and SIGSTOP every process of the tree, until a round finds nothing new."""
    for _ in range(MAX_ROUNDS):
        new = _tree(root, set(held)) - set(held)
        if not new:
            return
        for pid in new:
            try:
                fd = os.pidfd_open(pid)
            except (ProcessLookupError, OSError):
                continue  # gone already
            held[pid] = fd
            _send(fd, signal.SIGSTOP)


def _tree(root: int, known: set[int]) -> set[int]:
    """`root`, the members of its group and session, `known`, and all their descendants."""
    me = os.getpid()
    table = _processes()
    members = {pid for pid, (_, group, session) in table.items() if root in (group, session)}
    members |= {pid for pid in (root, *known) if pid in table}
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (parent, _, _) in table.items():
        children[parent].append(pid)
    stack = list(members)
    while stack:
        for child in children[stack.pop()]:
            if child not in members:
                members.add(child)
                stack.append(child)
    members.discard(me)
    return members


def _processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, session) of every process visible in /proc."""
    out: dict[int, tuple[int, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdecimal():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        # Fields after the command name (which may hold spaces and parentheses): state ppid pgrp session ...
        fields = stat.rpartition(")")[2].split()
        out[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return out


async def _wait_exits(held: dict[int, int], timeout: float) -> None:
    """Wait until every held process has exited, or `timeout` seconds."""
    loop = asyncio.get_running_loop()
    all_gone = asyncio.Event()
    pending = set(held.values())

    def exited(fd: int) -> None:
        loop.remove_reader(fd)
        pending.discard(fd)
        if not pending:
            all_gone.set()

    for fd in pending.copy():
        loop.add_reader(fd, exited, fd)
    try:
        if pending:
            await asyncio.wait_for(all_gone.wait(), timeout)
    except TimeoutError:
        pass
    finally:
        for fd in pending:
            loop.remove_reader(fd)


def _running(held: dict[int, int]) -> bool:
    # A pidfd turns readable when its process has exited (poll: select stops at fd 1024).
    poller = select.poll()
    for fd in held.values():
        poller.register(fd, select.POLLIN)
    return len(poller.poll(0)) < len(held)


def _signal(held: dict[int, int], sig: signal.Signals) -> None:
    for fd in held.values():
        _send(fd, sig)


def _send(fd: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        signal.pidfd_send_signal(fd, sig)
