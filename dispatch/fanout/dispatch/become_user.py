"""A worker becomes its tenant's unprivileged user, from inside, before any tenant code runs.

Workers start as the dispatcher's user (root, when tenants get uids of their
own) and drop to the tenant's uid themselves, rather than being exec'd under
it: the interpreter may live where only root can reach it (here under
/root), and the memory limit must be set while the process may still set it
(a hard limit that no tenant code can raise again; setting another process's
limits needs CAP_SYS_RESOURCE, which a container's root may not have).

Order matters: memory limit, no supplementary groups, the gid, the uid (after
which nothing can be taken back). A uid change clears the parent-death signal
and makes the process undumpable (its /proc files root's); both are set again.
"""

from __future__ import annotations

import ctypes
import os
import signal

from fanout import memory
from fanout.server.parent_death import die_with_parent

# Set by the dispatcher in a worker's environment when it must run as a tenant's uid.
ENV_UID = "FANOUT_WORKER_UID"
ENV_GID = "FANOUT_WORKER_GID"
# A reusable worker's memory limit (its environment's Resources), set the same way.
ENV_MEMORY = "FANOUT_WORKER_MEMORY"
PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def become(uid: int, gid: int, memory_limit: str = "") -> None:
    """Drop to `uid`/`gid` for good, under `memory_limit` (a quantity; "" for none)."""
    parent = os.getppid()
    memory.limit_this_process(memory_limit)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    die_with_parent(signal.SIGKILL, parent_pid=parent)


def become_from_env(memory_limit: str = "") -> None:
    """become() the user the environment names, if any (then take the names out of the environment)."""
    uid, gid = os.environ.pop(ENV_UID, ""), os.environ.pop(ENV_GID, "")
    if uid:
        become(int(uid), int(gid or uid), memory_limit)
    else:
        memory.limit_this_process(memory_limit)
