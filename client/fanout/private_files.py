"""Files that hold secrets: owner-only from their first byte, in owner-only directories.

Writing a file and chmod-ing it afterwards leaves a moment when anyone may
open it (and keep the descriptor). Here the content goes to a fresh file
created 0600, which then takes its name atomically.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def private_dir(path: Path, tighten: bool = True) -> Path:
    """Create `path` 0700; with `tighten`, also make an existing one 0700 (an older version made it 0755)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if tighten:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str, overwrite: bool = True) -> bool:
    """Write `text` to `path`, readable by its owner only at every moment.

    With overwrite=False a file already there wins and False is returned, so
    processes starting at once on a shared directory agree on one content.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if the name exists: never replaces another process's file
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
