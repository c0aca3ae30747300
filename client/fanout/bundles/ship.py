"""Shipping a run's code: pack the root task's project, upload it unless the server has it, name it in the spec.

Packing is done again only when a file of the project changed (size or
time), so starting many runs from one program costs one walk of the
project and one HasBundle call each. FANOUT_BUNDLE=0 ships nothing: the code
must then be importable where the workers run (their image).
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fanout.bundles import pack
from fanout.v1 import actions_pb2 as pb

if TYPE_CHECKING:
    from fanout.client import Client
    from fanout.task import Task

ENV_SWITCH = "FANOUT_BUNDLE"

Fingerprint = tuple[tuple[str, tuple[int, int] | None], ...]  # (name, (size, mtime) or None if gone) per file
_lock = threading.Lock()
_packed: dict[tuple[Path, str | None], tuple[Fingerprint, pack.Bundle]] = {}


@dataclass(frozen=True)
class Shipped:
    bundle: pb.CodeBundle
    task_ref: str  # the root task's reference, relative to the bundle for a task in a file
    uploaded: bool  # False: the server had the bundle already
    size: int


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def ship(client: Client, task: Task[Any, Any]) -> Shipped | None:
    """Upload the code of `task`'s project if needed; None when it is installed code or shipping is off."""
    if not enabled():
        return None
    module = sys.modules.get(task.fn.__module__)
    module_file = getattr(module, "__file__", None)
    if not module_file:
        return None
    root = pack.source_root(module_file)
    if root is None:
        return None
    bundle = packed(root, pack.lone_module(root, module_file))
    uploaded = False
    if not client.has_bundle(bundle.digest):
        uploaded = not client.upload_bundle(bundle.digest, bundle.data).already_present
    proto = pb.CodeBundle(digest=bundle.digest, paths=list(pack.sys_path_entries(root)))
    return Shipped(proto, _relative_ref(task.ref, root), uploaded, len(bundle.data))


def packed(root: Path, only: str | None = None) -> pack.Bundle:
    """The bundle of `root` (or of its file `only`), packed again only if a file changed since the last time."""
    fingerprint = tuple((name, _signature(path)) for name, path in pack.listing(root, only))
    with _lock:
        hit = _packed.get((root, only))
        if hit is not None and hit[0] == fingerprint:
            return hit[1]
    bundle = pack.pack(root, only=only)
    with _lock:
        _packed[(root, only)] = (fingerprint, bundle)
    return bundle


def _relative_ref(ref: str, root: Path) -> str:
    kind, _, rest = ref.partition(":")
    location, _, qualname = rest.rpartition(":")
    if kind != "file":
        return ref
    path = Path(location).resolve()
    real_root = root.resolve()
    if not path.is_relative_to(real_root):
        return ref
    return f"file:{path.relative_to(real_root).as_posix()}:{qualname}"


def _signature(path: str) -> tuple[int, int] | None:
    """Size and modification time; None for a file gone since the walk (pack leaves it out too)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns
