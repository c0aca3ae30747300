"""A guard process that stops every running action's tree when its dispatcher dies.

An action's own process gets SIGKILL when its dispatcher dies (parent-death
signal), but what the action started does not: a `sleep 30` behind
`sh -c 'sleep 30; ...'` would run on, working for a lease another dispatcher
now holds. The guard is a small process the backend starts beside it; the
backend writes "+PID" when an action starts and "-PID" when it ended, on
the guard's stdin. When that input ends (the dispatcher exited or was
killed: nobody else holds the pipe), the guard stops the tree of every
action still registered (see process_tree.py) and exits. A pid is checked
against its start time, so a pid reused meanwhile is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from fanout.dispatch.process_tree import kill_tree_now

log = logging.getLogger(__name__)


class Guard:
    """The backend's handle on its guard process, restarted if it died."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None

    async def watch(self, pid: int) -> None:
        await self._send(f"+{pid}\n")

    async def forget(self, pid: int) -> None:
        await self._send(f"-{pid}\n")

    async def close(self) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        self._proc.stdin.close()  # the guard stops what is still registered, then exits
        await self._proc.wait()
        self._proc = None

    async def _send(self, line: str) -> None:
        try:
            proc = await self._running()
            assert proc.stdin is not None
            proc.stdin.write(line.encode())
            await proc.stdin.drain()
        except (OSError, ConnectionError) as exc:
            # Actions still run; only a crash of the dispatcher itself could leave their children behind.
            log.warning("the action guard is not running (%s)", exc)

    async def _running(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                stdin=asyncio.subprocess.PIPE,
                start_new_session=True,  # a terminal's Ctrl-C is the dispatcher's to handle
            )
        return self._proc


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def main() -> None:
    watched: dict[int, str | None] = {}
    for line in sys.stdin:
        with contextlib.suppress(ValueError):
            pid = int(line[1:])
            if line.startswith("+"):
                watched[pid] = start_time(pid)
            else:
                watched.pop(pid, None)
    for pid, started in watched.items():
        # Gone (killed with its dispatcher): its group and session may live on, and
        # their id cannot be reused while they do. A different start time: reused.
        if start_time(pid) in (None, started):
            kill_tree_now(pid)


if __name__ == "__main__":
    main()
