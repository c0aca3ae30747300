"""The bundle a worker runs its actions from: fetched once per digest, put on sys.path before the task's import.

A worker serves one bundle (the dispatcher's pools are keyed by digest), so
the bundle activated last is the one its tasks come from: file references
are resolved against its root, and tasks defined in it are referred to
relative to it, so a child's reference means the same in any worker.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from fanout.bundles import unpack
from fanout.v1 import actions_pb2 as pb

if TYPE_CHECKING:
    from fanout.client import AsyncClient

_roots: dict[str, Path] = {}
_fetching: dict[str, asyncio.Future[Path]] = {}
_active: Path | None = None
_active_paths: list[str] = []  # a list: a repeated field compares with one at half the cost of a tuple of it


def active_root() -> Path | None:
    return _active


def is_active(bundle: pb.CodeBundle) -> bool:
    """Whether `bundle` is fetched and active already: nothing for prepare() to do (a worker's every action
    but its first), which the runtime checks without the cost of a coroutine."""
    root = _roots.get(bundle.digest)
    # The same Path object once activated: `is` first, since Path equality compares the parts.
    return root is not None and (root is _active or root == _active) and bundle.paths == _active_paths


async def prepare(client: AsyncClient, bundle: pb.CodeBundle, token: str | None) -> Path:
    """Fetch and unpack `bundle` unless this process or the cache has it, then put it on sys.path."""
    digest = bundle.digest
    root = _roots.get(digest)
    if root is None:
        fetch = _fetching.get(digest)
        if fetch is None:  # actions starting together share one fetch
            fetch = _fetching[digest] = asyncio.ensure_future(_fetch(client, digest, token))
            fetch.add_done_callback(lambda _: _fetching.pop(digest, None))  # a failed fetch is tried again
        root = _roots[digest] = await asyncio.shield(fetch)
    activate(root, bundle.paths)
    return root


async def _fetch(client: AsyncClient, digest: str, token: str | None) -> Path:
    # One stat, once per process and bundle, on the loop: a thread for it would cost a one-shot
    # worker a thread pool to start and join, several times the stat.
    hit = unpack.cached(digest)
    if hit is not None:
        return hit
    data = await client.get_bundle(digest, token=token)
    return await asyncio.to_thread(unpack.install, digest, data)


def activate(root: Path, paths: list[str] | tuple[str, ...]) -> None:
    """Make `root` the active bundle and its `paths` (relative, "." the root) the first sys.path entries."""
    global _active, _active_paths
    if _active == root and _active_paths == list(paths):
        return  # the common case in a worker: every action of its pool runs from one bundle
    _active, _active_paths = root, list(paths)
    for rel in reversed(paths or ["."]):
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts:
            raise ImportError(f"bundle path {rel!r} leads outside the bundle")
        entry = str(root.joinpath(*parts))
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def current() -> Path | None:
    """The active bundle's root (None: none), which a relative task reference is resolved against."""
    return _active


def relative_to_active(path: str) -> str | None:
    """`path` relative to the active bundle's root, if it lies inside it."""
    if _active is None:
        return None
    p = Path(path)
    return p.relative_to(_active).as_posix() if p.is_relative_to(_active) else None


def resolve(location: str) -> str:
    """A file reference's path: absolute as given, or relative to the active bundle."""
    if location.startswith("/"):
        return location
    if _active is None:
        raise ImportError(f"task file {location!r} is relative to a code bundle, and this action has none")
    parts = PurePosixPath(location).parts
    if ".." in parts:
        raise ImportError(f"task file {location!r} leads outside the bundle")
    return str(_active.joinpath(*parts))
