"""The process backend's per-action folders, and the finished work they keep across a crash.

Layout: <root>/<tenant>/<run>/<action>.<attempt>/ with spec.pb (written
before the action starts), result.pb (written by the runtime to a temporary
file and renamed, so it is whole or absent), output.log, and whatever the
action writes in its working directory.

The action folder is private (0700) and, when actions run under a uid of
their own (sandbox.py), owned by that uid; the tenant and run folders above
it are the dispatcher's (0711: passable, not listable), so an action cannot
rename its folder or see other tenants'. Whatever the dispatcher reads or
cuts in an action folder is opened without following links the action may
have planted there (untrusted_files.py).

A folder lives until the report of its outcome reached the control plane.
A dispatcher killed after an action finished but before that report went
out therefore leaves spec.pb and result.pb behind, and its next incarnation
on the same root reports that result instead of running the action again.
Only one dispatcher at a time recovers a root: it holds an exclusive lock on
<root>/.lock for its life (the kernel drops it when the process dies).

Once reported, a successful action's folder is removed; a failed one is cut
down to the tail of its log and its result (spec.pb goes first, so a cut
folder is never mistaken for unreported work), and at most
`max_kept_failures` of those stay, the oldest removed first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from fanout.dispatch.untrusted_files import open_untrusted, read_untrusted
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb

SPEC = "spec.pb"
RESULT = "result.pb"
LOG = "output.log"
LOCK = ".lock"
# What a failed action keeps for reading: enough log to see why, never its bulk.
KEPT_LOG_BYTES = 64 * 1024
KEPT_RESULT_BYTES = 64 * 1024
MAX_KEPT_FAILURES = 100

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leftover:
    """An action a previous dispatcher finished on this root but never reported."""

    action: dpb.LeasedAction  # tenant, run, spec and attempt; no token: it does not run again
    result: pb.ActionResult
    folder: Path


class WorkRoot:
    def __init__(self, root: Path, max_kept_failures: int = MAX_KEPT_FAILURES) -> None:
        self.root = root
        self.max_kept_failures = max_kept_failures
        self._lock_fd: int | None = None
        self._kept: deque[Path] = deque()
        self._kept_guard = threading.Lock()  # folders are released from worker threads

    def folder(self, action: dpb.LeasedAction) -> Path:
        return self.root / action.tenant / action.run / f"{action.spec.name}.{action.attempt}"

    def prepare(self, action: dpb.LeasedAction, owner: tuple[int, int] | None = None) -> Path:
        """Create the action's private folder holding its spec; owned by `owner` (uid, gid) if given."""
        folder = self.folder(action)
        for _ in range(3):  # a sibling's release may remove the empty run folder between the steps of mkdir
            try:
                folder.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
                folder.mkdir(mode=0o700, exist_ok=True)
                break
            except FileNotFoundError:
                continue
        os.chmod(folder, 0o700, follow_symlinks=False)  # whatever the umask
        fd = open_untrusted(folder / SPEC, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, action.spec.SerializeToString())
            if owner is not None:
                os.fchown(fd, *owner)  # the action's runtime reads it under its own uid
        finally:
            os.close(fd)
        if owner is not None:
            os.chown(folder, *owner, follow_symlinks=False)
        return folder

    def claim(self) -> bool:
        """Take the root for this dispatcher; False if another live dispatcher holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # passable to each action's folder, but no action lists the tenants here
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # drops the lock
            self._lock_fd = None

    def leftovers(self) -> list[Leftover]:
        """What earlier dispatchers on this root left: finished results to report.

        Folders of actions that were killed before they finished are removed
        (each runs again under a new lease); kept failures are counted
        against the cap. Call only after claim() succeeded.
        """
        found: list[Leftover] = []
        kept: list[tuple[float, Path]] = []
        for folder in self._action_folders():
            if not (folder / SPEC).exists():
                with contextlib.suppress(OSError):
                    kept.append((folder.stat().st_mtime, folder))
                continue
            leftover = _leftover(folder)
            if leftover is None:
                self.discard(folder)
            else:
                found.append(leftover)
        with self._kept_guard:
            self._kept.extend(folder for _, folder in sorted(kept))
        self._enforce_cap()
        return found

    def release(self, folder: Path, succeeded: bool) -> None:
        """The folder's outcome was reported: remove it, or keep a bounded record of a failure."""
        if succeeded:
            self.discard(folder)
            return
        _cut_down(folder)
        with self._kept_guard:
            self._kept.append(folder)
        self._enforce_cap()

    def discard(self, folder: Path) -> None:
        with contextlib.suppress(OSError):
            (folder / SPEC).unlink()  # first: a folder cut short by a crash is not taken for unreported work
        shutil.rmtree(folder, ignore_errors=True)
        for parent in (folder.parent, folder.parent.parent):  # the run's and the tenant's folders, once empty
            if parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:
                break  # not empty: other actions use it

    def _enforce_cap(self) -> None:
        while True:
            with self._kept_guard:
                if len(self._kept) <= self.max_kept_failures:
                    return
                oldest = self._kept.popleft()
            self.discard(oldest)

    def _action_folders(self) -> list[Path]:
        return [
            folder for tenant in _subfolders(self.root) for run in _subfolders(tenant) for folder in _subfolders(run)
        ]


def outcome_phase(result: pb.ActionResult) -> int:
    return pb.FAILED if result.HasField("error") else pb.SUCCEEDED


def read_result(path: Path) -> pb.ActionResult | None:
    """The result the runtime wrote, or None if there is none that can be trusted."""
    try:
        data = read_untrusted(path)  # never through a link the action planted (see the module doc)
    except OSError:
        return None
    try:
        result = pb.ActionResult.FromString(data)
    except DecodeError:
        return None
    # A whole result always says something: outputs or an error (an empty file is no result).
    if not data or not (result.outputs or result.HasField("error")):
        return None
    return result


def _leftover(folder: Path) -> Leftover | None:
    name, _, attempt = folder.name.rpartition(".")
    if not attempt.isdecimal():
        return None
    try:
        spec = pb.ActionSpec.FromString(read_untrusted(folder / SPEC))
    except (OSError, DecodeError):
        return None
    result = read_result(folder / RESULT)
    if spec.name != name or result is None:
        return None
    action = dpb.LeasedAction(tenant=folder.parent.parent.name, run=folder.parent.name, spec=spec, attempt=int(attempt))
    return Leftover(action, result, folder)


def _cut_down(folder: Path) -> None:
    """Keep only the tail of the log and a small result; spec.pb goes first (see the module doc)."""
    with contextlib.suppress(FileNotFoundError):
        (folder / SPEC).unlink()
    keep = {LOG, RESULT}
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name in keep and entry.is_file() and not entry.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    _keep_tail(folder / LOG, KEPT_LOG_BYTES)
    result = folder / RESULT
    with contextlib.suppress(OSError):
        if os.lstat(result).st_size > KEPT_RESULT_BYTES:
            result.unlink()  # the control plane has it; a cut one would not parse


def _keep_tail(path: Path, size: int) -> None:
    """Cut the file down to its last `size` bytes, in place."""
    try:
        with os.fdopen(open_untrusted(path, os.O_RDWR), "r+b") as f:
            length = f.seek(0, os.SEEK_END)
            if length <= size:
                return
            f.seek(length - size)
            tail = f.read(size)
            f.seek(0)
            f.write(tail)
            f.truncate(len(tail))
    except OSError:
        return


def _subfolders(path: Path) -> list[Path]:
    try:
        return [entry for entry in path.iterdir() if entry.is_dir() and not entry.is_symlink()]
    except OSError:
        return []
