"""Tie a child process's life to its parent's (Linux PR_SET_PDEATHSIG).

What a process tree starts must not outlive it: a private Redis left behind
would share its append-only file with the next one, and an action left
behind would keep working for a lease that another dispatcher now holds.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_SETPRIV = shutil.which("setpriv")  # util-linux, on every Debian


def die_with_parent(sig: signal.Signals = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Call in a child forked from a single-threaded parent: get `sig` when the parent dies.

    Not as a preexec_fn: Python code between fork and exec of a threaded
    parent can crash (seen here as SIGSEGV); use `command_dying_with_parent`.
    With `parent_pid`, a parent that died before the call is noticed too.
    """
    _prctl(PR_SET_PDEATHSIG, int(sig))
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def command_dying_with_parent(argv: list[str], sig: signal.Signals = signal.SIGKILL) -> list[str]:
    """`argv` behind `setpriv --pdeathsig`, which sets the signal and execs it; unchanged without setpriv."""
    if _SETPRIV is None:
        return argv
    return [_SETPRIV, "--pdeathsig", sig.name.removeprefix("SIG"), "--", *argv]
