"""Opening files in a folder that tenant code can write, without following what it planted there.

An action's folder belongs to the action (its uid, when the dispatcher runs
as root): the action can replace its result or its log with a symlink to the
admin token, or a hard link to another file. The dispatcher, which may be
root, must then neither read that file back into a report nor write to it.
So every such file is opened with O_NOFOLLOW (a symlink fails to open), and
kept only if it is a regular file with a single link (a hard link to a file
elsewhere is refused too; most kernels refuse to make one to a file of
another user anyway, but fs.protected_hardlinks is a setting).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a planted FIFO must not hang the reader


def open_untrusted(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor of the regular file at `path`; OSError if it is a symlink, not regular, or linked elsewhere.

    O_TRUNC cuts the file only once it is known to be a plain file of this folder: opened
    with it, a hard link to a file elsewhere would be cut before the check could refuse it."""
    fd = os.open(path, (flags & ~os.O_TRUNC) | _FLAGS, mode)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OSError(f"{path} is not a plain file of this folder")
        if flags & os.O_TRUNC and info.st_size:
            os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_untrusted(path: Path, offset_from_end: int | None = None) -> bytes:
    """The file's bytes (only its last `offset_from_end` if given); OSError as open_untrusted."""
    fd = open_untrusted(path)
    with contextlib.closing(os.fdopen(fd, "rb")) as f:
        if offset_from_end is not None:
            f.seek(max(f.seek(0, os.SEEK_END) - offset_from_end, 0))
            return f.read(offset_from_end)
        return f.read()
