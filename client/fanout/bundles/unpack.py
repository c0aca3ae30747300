"""Unpacking a bundle into the local cache, once per digest, safely and atomically.

The bytes are checked against the digest, every entry must be a plain file
or directory whose path stays inside the bundle (no absolute paths, no
"..", no links or devices), and the total is bounded. It is extracted into a
temporary directory beside its final place and renamed there, so a reader
sees a whole bundle or none, and two processes unpacking at once both end
with the same one.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

ENV_CACHE = "FANOUT_BUNDLE_CACHE"
# Unpacked, a bundle may be this much bigger than its 20 MiB compressed cap, and hold this many entries.
MAX_UNPACKED_BYTES = 200 << 20
MAX_ENTRIES = 50_000


class UnsafeBundle(ValueError):
    """The bundle does not match its digest, or an entry would land outside it or is not a plain file."""


def cache_dir() -> Path:
    """$FANOUT_BUNDLE_CACHE, else the user's cache directory."""
    configured = os.environ.get(ENV_CACHE)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "fanout", "bundles")


def cached(digest: str, cache: Path | None = None) -> Path | None:
    path = (cache or cache_dir()) / digest
    return path if path.is_dir() else None


def install(digest: str, data: bytes, cache: Path | None = None) -> Path:
    """The directory holding bundle `digest`, unpacked from `data` unless it is there already."""
    cache = cache or cache_dir()
    target = cache / digest
    if target.is_dir():
        return target
    if hashlib.sha256(data).hexdigest() != digest:
        raise UnsafeBundle(f"the bundle's bytes do not hash to {digest}")
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = Path(tempfile.mkdtemp(dir=cache, prefix=f".{digest[:12]}-"))
    try:
        extract(data, scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():  # not another process finishing first: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def extract(data: bytes, dest: Path) -> None:
    """Extract a bundle's tar.gz into `dest`; UnsafeBundle (and nothing outside `dest`) on a bad entry."""
    total = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for count, member in enumerate(tar, start=1):
            if count > MAX_ENTRIES:
                raise UnsafeBundle(f"the bundle holds more than {MAX_ENTRIES} entries")
            relative = _safe_name(member.name)
            if member.isdir():
                (dest / relative).mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise UnsafeBundle(f"bundle entry {member.name!r} is a link or device; only plain files are allowed")
            total += member.size
            if total > MAX_UNPACKED_BYTES:
                raise UnsafeBundle(f"the bundle unpacks to more than {MAX_UNPACKED_BYTES >> 20} MiB")
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has content
            path = dest / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as out:  # "x": a name given twice cannot overwrite through anything
                shutil.copyfileobj(source, out)
            path.chmod(0o755 if member.mode & 0o111 else 0o644)


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or "\0" in name:
        raise UnsafeBundle(f"bundle entry {name!r} would land outside the bundle")
    return path
