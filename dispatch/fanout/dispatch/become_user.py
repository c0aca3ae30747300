"""A worker becomes its tenant's unprivileged user, from inside, before any tenant code runs.

Workers start as the dispatcher's user (root, when tenants get uids of their
own) and drop to the tenant's uid themselves, rather than being exec'd under
it: the interpreter may live where only root can reach it (here under
/root), and the memory limit must be set while the process may still set it
(a hard limit that no tenant code can raise again; setting another process's
limits needs CAP_SYS_RESOURCE, which a container's root may not have).

Order matters: memory limit, the import path, no supplementary groups, the
gid, the uid (after which nothing can be taken back). A uid change clears the
parent-death signal and makes the process undumpable (its /proc files root's);
both are set again.

The import path: what the worker imported before the drop stays imported, but
tenant code imports more (the rest of the standard library, its packages). A
folder on sys.path that the tenant's uid may read but not reach (its parents
are root's alone, like /root) is opened while still root, and sys.path names
it by that descriptor, /proc/self/fd/N: a path that starts at the folder
itself, so the parents' permissions no longer apply. Nothing else opens up:
the folder and what is under it keep their own permissions, and `..` from it
still meets the parents closed.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import stat
import sys
from pathlib import Path

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
    keep_path_reachable(uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    die_with_parent(signal.SIGKILL, parent_pid=parent)


def keep_path_reachable(uid: int, gid: int) -> None:
    """Name each sys.path folder `uid` may read but not reach by a descriptor opened now (see above)."""
    changed = False
    for i, entry in enumerate(sys.path):
        folder = Path(entry or ".").absolute()
        if not folder.is_dir() or not _may(folder, uid, gid, stat.S_IROTH | stat.S_IXOTH):
            continue  # nothing to import there, or closed to the tenant on purpose: leave it so
        if all(_may(parent, uid, gid, stat.S_IXOTH) for parent in folder.parents):
            continue
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # non-inheritable: it stays in this process
        sys.path[i] = f"/proc/self/fd/{fd}"
        changed = True
    if changed:
        importlib.invalidate_caches()


def _may(path: Path, uid: int, gid: int, other_bits: int) -> bool:
    """Whether `uid` (in group `gid` only) has the permission whose bits for others are `other_bits`."""
    info = path.stat()
    if info.st_uid == uid:
        bits = other_bits << 6
    elif info.st_gid == gid:
        bits = other_bits << 3
    else:
        bits = other_bits
    return info.st_mode & bits == bits


def become_from_env(memory_limit: str = "") -> None:
    """become() the user the environment names, if any (then take the names out of the environment)."""
    uid, gid = os.environ.pop(ENV_UID, ""), os.environ.pop(ENV_GID, "")
    if uid:
        become(int(uid), int(gid or uid), memory_limit)
    else:
        memory.limit_this_process(memory_limit)
