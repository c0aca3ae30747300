"""The key that signs action tokens: in a file every server of a deployment shares, never in Redis.

Whoever holds it can mint an action token for any action of any tenant, so
it must not be readable by anyone who can merely reach Redis or read a dump
of it. Each server reads it once at start.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from fanout.private_files import private_dir, write_private
from fanout.server.errors import StartupError

log = logging.getLogger(__name__)

MIN_BYTES = 32
ENV_NAME = "FANOUT_SIGNING_KEY_FILE"


def load(path: str) -> bytes:
    if not path:
        raise StartupError(
            f"no signing key for action tokens: set {ENV_NAME} (or --signing-key-file) to a file that every "
            "server of this deployment shares; a file that does not exist is created with a new key"
        )
    file = Path(path)
    try:
        key = file.read_bytes().strip()
        mode = file.stat().st_mode
    except OSError as exc:
        raise StartupError(f"cannot read the signing key file {path}: {exc.strerror}") from None
    if len(key) < MIN_BYTES:
        raise StartupError(f"the signing key file {path} holds {len(key)} bytes; it needs at least {MIN_BYTES}")
    if mode & 0o077:
        log.warning("the signing key file %s is readable by other users (mode %o): chmod 600 it", path, mode & 0o777)
    return key


def create_if_missing(path: Path) -> bool:
    """Put a new random key in `path` unless a key is there already; True if this call made it."""
    private_dir(path.parent, tighten=False)
    return write_private(path, secrets.token_urlsafe(48) + "\n", overwrite=False)
