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

Once reported, a successful action's folder becomes a spare; a failed one
is cut down to the tail of its log and its result (spec.pb goes first, so a
cut folder is never mistaken for unreported work), and at most
`max_kept_failures` of those stay, the oldest removed first.

Spares: making a file is the costly part of an action's folder on some file
systems. On ext4 without a journal, each new inode is checked against every
inode freed in its group in the last half minute or so, so at a hundred
actions a second, four new files and four removed ones per action took a
sixth of the CPU of one-worker-per-action fanouts. So a successful action's
folder is not removed: it is moved to <root>/.spare/ at once (out of the
action tree: a crash from then on leaves nothing that looks unreported),
emptied of all but its spec, log and result files (the log and result cut
to nothing, the result renamed to the temporary name the runtime writes it
under; the spec is checked and written over when the folder is taken), and the
next action of the same owner (uid and gid) gets it, renamed into place, its
files written over instead of made anew. Owners never share spares, as
tenants never share folders. A spare's files are checked like any file the
action had (untrusted_files.py): whatever is not a plain file of the folder
is removed. At most `max_spares` wait; spares left by an earlier dispatcher
are removed when a new one claims the root.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
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
RESULT_TMP = "result.tmp"  # where the runtime writes the result before renaming it (worker.run_one_shot)
LOG = "output.log"
LOCK = ".lock"
SPARES = ".spare"
# What a failed action keeps for reading: enough log to see why, never its bulk.
KEPT_LOG_BYTES = 64 * 1024
KEPT_RESULT_BYTES = 64 * 1024
MAX_KEPT_FAILURES = 100
# Spare folders kept for reuse: as many as the process backend runs actions at once (MAX_PROCESSES).
MAX_SPARES = 256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leftover:
    """An action a previous dispatcher finished on this root but never reported."""

    action: dpb.LeasedAction  # tenant, run, spec and attempt; no token: it does not run again
    result: pb.ActionResult
    folder: Path


Owner = tuple[int, int]  # uid, gid


class WorkRoot:
    def __init__(self, root: Path, max_kept_failures: int = MAX_KEPT_FAILURES, max_spares: int = MAX_SPARES) -> None:
        self.root = root
        self.max_kept_failures = max_kept_failures
        self.max_spares = max_spares
        self._lock_fd: int | None = None
        self._kept: deque[Path] = deque()
        self._kept_guard = threading.Lock()  # folders are released from worker threads
        self._spares: dict[Owner, deque[Path]] = {}  # oldest first
        self._spare_count = 0  # in self._spares, and being made ready for it
        self._spare_names = itertools.count()
        self._spare_guard = threading.Lock()

    def folder(self, action: dpb.LeasedAction) -> Path:
        return self.root / action.tenant / action.run / f"{action.spec.name}.{action.attempt}"

    def prepare(self, action: dpb.LeasedAction, owner: tuple[int, int] | None = None) -> Path:
        """Create the action's private folder holding its spec; owned by `owner` (uid, gid) if given.

        A spare of the same owner is taken if there is one (see the module doc)."""
        folder = self.folder(action)
        if not self._reuse_spare(folder, owner or (os.geteuid(), os.getegid())):
            for _ in range(3):  # a sibling's release may remove the empty run folder between the steps of mkdir
                try:
                    folder.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
                    folder.mkdir(mode=0o700, exist_ok=True)
                    break
                except FileNotFoundError:
                    continue
            if owner is not None:
                os.chown(folder, *owner, follow_symlinks=False)
        os.chmod(folder, 0o700, follow_symlinks=False)  # whatever the umask, or the last action of a spare, set
        _write_spec(folder / SPEC, action.spec.SerializeToString(), owner)
        return folder

    def _reuse_spare(self, folder: Path, owner: Owner) -> bool:
        with self._spare_guard:
            spares = self._spares.get(owner)
            if not spares:
                return False
            spare = spares.pop()  # the newest: its blocks are the likeliest still cached
            self._spare_count -= 1
        for _ in range(3):
            try:
                folder.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
                os.rename(spare, folder)
                return True
            except FileNotFoundError:
                continue  # a sibling's release removed the empty run folder between the steps
            except OSError:
                break  # the folder is there already (a repeated lease of this attempt)
        shutil.rmtree(spare, ignore_errors=True)
        return False

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
        # Spares an earlier dispatcher left: their owners' next actions may be long gone.
        shutil.rmtree(self.root / SPARES, ignore_errors=True)
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
        """The folder's outcome was reported: make it a spare (or remove it), or keep a bounded record of a failure."""
        if succeeded:
            if not self._keep_spare(folder):
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
        self._remove_empty_parents(folder)

    def _remove_empty_parents(self, folder: Path) -> None:
        for parent in (folder.parent, folder.parent.parent):  # the run's and the tenant's folders, once empty
            if parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:
                break  # not empty: other actions use it

    def _keep_spare(self, folder: Path) -> bool:
        """Move a reported success's folder to the spares, emptied; False if it was left where it is."""
        with self._spare_guard:
            evicted = self._evict_spare() if self._spare_count >= self.max_spares else None
            if self._spare_count >= self.max_spares:
                return False  # all of them are being made ready
            self._spare_count += 1
            spare = self.root / SPARES / str(next(self._spare_names))
        if evicted is not None:
            shutil.rmtree(evicted, ignore_errors=True)
        try:
            info = os.lstat(folder)
            try:
                os.rename(folder, spare)
            except FileNotFoundError:
                spare.parent.mkdir(mode=0o700, exist_ok=True)  # the first spare of this root
                os.rename(folder, spare)
        except OSError:
            with self._spare_guard:
                self._spare_count -= 1
            return False
        self._remove_empty_parents(folder)
        _empty_spare(spare)
        with self._spare_guard:
            self._spares.setdefault((info.st_uid, info.st_gid), deque()).append(spare)
        return True

    def _evict_spare(self) -> Path | None:
        """Take the oldest spare of the owner holding most, for removal (under the guard); None if none waits."""
        owner = max(self._spares, key=lambda o: len(self._spares[o]), default=None)
        if owner is None or not self._spares[owner]:
            return None
        self._spare_count -= 1
        return self._spares[owner].popleft()

    def _enforce_cap(self) -> None:
        while True:
            with self._kept_guard:
                if len(self._kept) <= self.max_kept_failures:
                    return
                oldest = self._kept.popleft()
            self.discard(oldest)

    def _action_folders(self) -> list[Path]:
        tenants = [t for t in _subfolders(self.root) if not t.name.startswith(".")]  # no tenant's name starts so
        return [folder for tenant in tenants for run in _subfolders(tenant) for folder in _subfolders(run)]


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


def _write_spec(path: Path, data: bytes, owner: Owner | None) -> None:
    """Write the spec over the file a spare has (no new inode), or make it; never through a planted link."""
    try:
        fd = open_untrusted(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError:
        _remove(path)  # the last action of a spare left something else here (see _empty_spare)
        fd = open_untrusted(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.write(fd, data)
        if owner is not None:
            os.fchown(fd, *owner)  # the action's runtime reads it under its own uid
    finally:
        os.close(fd)


def _empty_spare(spare: Path) -> None:
    """Leave only the spec, log and result files, the log and result cut to nothing, the result under
    its temporary name. The spec is left as it is: the next prepare() checks it and writes over it."""
    keep = {SPEC, LOG, RESULT, RESULT_TMP}
    try:
        entries = list(os.scandir(spare))
    except OSError:
        return
    for entry in entries:
        if entry.name not in keep:
            _remove(Path(entry.path))
            continue
        if entry.name == SPEC:
            continue
        try:
            fd = open_untrusted(Path(entry.path), os.O_WRONLY | os.O_TRUNC)  # a plain file of this folder only
        except OSError:
            _remove(Path(entry.path))
            continue
        os.close(fd)
    with contextlib.suppress(OSError):
        os.replace(spare / RESULT, spare / RESULT_TMP)  # the runtime writes over it, then renames it back


def _remove(path: Path) -> None:
    """Remove what an action left at `path`, a folder or not, never following a link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


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
