"""Packing a task's source into a deterministic, content-addressed bundle (the SDK's side).

The bundle holds the project the task's module lives in: the nearest
directory above it with a pyproject.toml, setup.py or .git, else the
directory above its top package (a lone module in the home directory or
/ goes alone). Entries are sorted, with fixed times,
owners and modes, so the same source always gives the same bytes and digest
(sha256 of the tar.gz). Modules installed in site-packages or the standard
library are not packed: the worker's image has them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import sys
import sysconfig
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fanout import errors

MAX_BUNDLE_BYTES = 20 << 20
# Directories never packed: version control, environments, caches, build output.
IGNORED_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".venv", "venv", "__pycache__", "node_modules", ".fanout", "build", "dist",
        ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox", ".eggs", ".idea", ".vscode",
    }
)  # fmt: skip
IGNORED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
PROJECT_MARKERS = ("pyproject.toml", "setup.py", ".git")
# Every entry's time: a real date (not 0), so tools that dislike the epoch take it.
FIXED_MTIME = 946_684_800  # 2000-01-01


@dataclass(frozen=True)
class Bundle:
    root: Path
    data: bytes
    digest: str
    files: int
    # The caller's sys.path entries inside the root, relative to it ("." is the root).
    paths: tuple[str, ...]


def source_root(module_file: str) -> Path | None:
    """The directory to pack for a module at `module_file`; None when it is installed, not the caller's own."""
    path = Path(module_file).resolve()
    if _installed(path):
        return None
    for directory in path.parents:
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
        if directory == Path.home():
            break
    top = path.parent
    while (top / "__init__.py").exists() and top.parent != top:
        top = top.parent
    return top


def lone_module(root: Path, module_file: str) -> str | None:
    """The module's name in `root` when root is too wide to pack whole (the home directory, /): only it goes."""
    wide = {Path.home().resolve(), Path("/")}
    return Path(module_file).resolve().relative_to(root).as_posix() if root in wide else None


def _installed(path: Path) -> bool:
    return any(path.is_relative_to(place) for place in _install_places()) or "site-packages" in path.parts


@functools.cache
def _install_places() -> tuple[Path, ...]:
    """Where this interpreter's standard library and installed packages live (they do not move)."""
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple({Path(sysconfig.get_paths()[name]).resolve() for name in names})


def files_of(root: Path, only: str | None = None) -> list[tuple[str, Path]]:
    """(name in the bundle, file) for every file to pack, sorted by name; symlinks leading out of root are left out.

    `only`: just that file (see lone_module).
    """
    return [(name, Path(path)) for name, path in listing(root, only)]


def listing(root: Path, only: str | None = None) -> list[tuple[str, str]]:
    """files_of() with each file's path as a string: every run started walks the whole project
    (ship.packed), so the walk reads directory entries (os.scandir) and makes no Path per file."""
    if only is not None:
        return [(only, os.path.join(root, only))]
    out: list[tuple[str, str]] = []
    real_root = Path(os.path.realpath(root))
    pending = [(os.fspath(root), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:  # unreadable or gone since it was listed: as os.walk, left out
            continue
        for entry in entries:
            name = entry.name
            if entry.is_dir():  # a link to a directory counts as one, and is not walked into
                if not entry.is_symlink() and name not in IGNORED_DIRS and not name.endswith(IGNORED_SUFFIXES):
                    pending.append((entry.path, f"{prefix}{name}/"))
                continue
            if name.endswith(IGNORED_SUFFIXES) or not entry.is_file():
                continue
            if entry.is_symlink() and not Path(os.path.realpath(entry.path)).is_relative_to(real_root):
                continue
            out.append((prefix + name, entry.path))
    return sorted(out)


def pack(root: Path, max_bytes: int = MAX_BUNDLE_BYTES, only: str | None = None) -> Bundle:
    """The bundle of `root` (or of its file `only`); InvalidRequest naming the biggest files when over `max_bytes`."""
    files = files_of(root, only)
    raw = io.BytesIO()
    # The gzip header would hold a time and a file name: fixed, so the digest depends on content only.
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, path in files:
                try:
                    content = path.read_bytes()
                except FileNotFoundError:
                    # Gone since the walk: a log or temporary file of a program running in the
                    # project (a local control plane's state, say), not code the run needs.
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(content)
                info.mtime = FIXED_MTIME
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                tar.addfile(info, io.BytesIO(content))
                if raw.tell() > max_bytes:
                    raise _too_big(root, files, max_bytes)
    data = raw.getvalue()
    if len(data) > max_bytes:
        raise _too_big(root, files, max_bytes)
    return Bundle(root, data, hashlib.sha256(data).hexdigest(), len(files), sys_path_entries(root))


def sys_path_entries(root: Path) -> tuple[str, ...]:
    """The caller's sys.path entries inside `root`, relative to it, in sys.path order; the root itself last."""
    real_root = root.resolve()
    out: list[str] = []
    for entry in sys.path:
        try:
            real = Path(entry or os.getcwd()).resolve()
        except OSError:
            continue
        if real.is_relative_to(real_root) and not _installed(real):
            rel = real.relative_to(real_root).as_posix()
            if rel not in out:
                out.append(rel)
    if "." not in out:
        out.append(".")
    return tuple(out)


def _too_big(root: Path, files: list[tuple[str, Path]], max_bytes: int) -> errors.InvalidRequest:
    biggest = sorted(files, key=lambda f: f[1].stat().st_size, reverse=True)[:5]
    named = ", ".join(f"{name} ({path.stat().st_size / 2**20:.1f} MiB)" for name, path in biggest)
    return errors.InvalidRequest(
        f"the code bundle of {root} is over the {max_bytes / 2**20:.0f} MiB cap (compressed); biggest files: "
        f"{named}. Move data out of the project directory, or ship the code in the image and set FANOUT_BUNDLE=0"
    )
