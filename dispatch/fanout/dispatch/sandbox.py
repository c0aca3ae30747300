"""What an action may do on a dispatcher's host: the tenants' trust, and the uid each tenant runs under.

Untrusted (the default of `fanout up` and `fanout dispatcher`, unless
started with --trust-tenants): an action with an explicit `command` fails at
once with a non-recoverable `UntrustedSpec` error, and its `workdir` is not
where it runs: every action runs in its private folder (workdirs.py). The
SDK names the caller's directory as `workdir` on every run, because that is
where a task's modules are found while code is not shipped; so `workdir`
still goes on the task's import path, which under the action's own uid lets
it read only what that uid could read anyway. Refusing these fields is the
dispatcher's decision, not the server's: whether a tenant is trusted is a
property of the machines that run its code (a BYOC tenant's own dispatcher
may trust it), so submission cannot know it.

When the dispatcher runs as root, each tenant's actions (one-shot and
pooled workers alike) run under a uid of their own, allocated from
FIRST_UID up and kept in a small JSON state file (tenant -> uid; updated
under a lock with an atomic rename, so dispatchers sharing the file agree),
with a private home (0700, owned by that uid). Not root, actions run as the
dispatcher's user and these protections are the scrubbed environment and
private folders only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fanout.errors import ConfigError
from fanout.v1 import actions_pb2 as pb

FIRST_UID = 200_000
# Far below the 32-bit uid ceiling, and clear of the ranges of the usual user namespaces.
MAX_TENANT_UIDS = 100_000
STATE_FILE = "tenant-uids.json"
HOMES = "homes"


@dataclass(frozen=True)
class Identity:
    """The unprivileged user one tenant's actions run as."""

    uid: int
    gid: int
    home: Path


class TenantUsers:
    """Tenant -> uid, persisted in `<state_dir>/tenant-uids.json`; homes under `<state_dir>/homes/`."""

    def __init__(self, state_dir: Path, first_uid: int = FIRST_UID) -> None:
        self.state_dir = state_dir
        self.first_uid = first_uid
        self._known: dict[str, int] = {}

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def identity(self, tenant: str) -> Identity:
        """The tenant's identity, allocated (and its home made) on first use. Blocking: call from a thread."""
        uid = self._known.get(tenant)
        if uid is None:
            uid = self._known[tenant] = self._allocate(tenant)
        home = self.state_dir / HOMES / str(uid)
        if not home.is_dir():
            (self.state_dir / HOMES).mkdir(mode=0o711, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                home.mkdir(mode=0o700)
            os.chown(home, uid, uid, follow_symlinks=False)
            os.chmod(home, 0o700, follow_symlinks=False)
        return Identity(uid, uid, home)

    def _allocate(self, tenant: str) -> int:
        self.state_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        lock = os.open(self.state_dir / f".{STATE_FILE}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one allocation at a time, across dispatchers on this directory
            uids = self._read()
            if tenant not in uids:
                taken = set(uids.values())
                uid = next((u for u in range(self.first_uid, self.first_uid + MAX_TENANT_UIDS) if u not in taken), None)
                if uid is None:
                    raise RuntimeError(f"no free tenant uid left in {self.first_uid}+{MAX_TENANT_UIDS}")
                uids[tenant] = uid
                self._write(uids)
            return uids[tenant]
        finally:
            os.close(lock)  # drops the lock

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            raise RuntimeError(f"{self.state_file} is not a map of tenant to uid; fix or remove it")
        return data

    def _write(self, uids: dict[str, int]) -> None:
        tmp = self.state_file.with_name(f".{STATE_FILE}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(uids, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)  # atomic: a crash leaves the old map or the new one


@dataclass(frozen=True)
class Sandbox:
    """The dispatcher's policy for tenant code; Sandbox() trusts tenants and runs them as itself (library default)."""

    trust_tenants: bool = True
    users: TenantUsers | None = None

    @classmethod
    def for_dispatcher(cls, state_dir: Path, trust_tenants: bool, tenant_uids: bool = True) -> Sandbox:
        """The CLI's policy: tenants untrusted unless told, and a uid per tenant when running as root
        (unless `tenant_uids` is off: development on a root-only machine).

        ConfigError if, as root, the tenants' uids could not pass through `state_dir`'s parents.
        """
        if os.geteuid() != 0 or not tenant_uids:
            return cls(trust_tenants)
        state_dir = state_dir.resolve()
        for parent in state_dir.parents:
            if parent.is_dir() and not parent.stat().st_mode & 0o001:
                raise ConfigError(
                    f"{parent} is closed to other users, so actions running under their tenants' uids could not "
                    f"reach their folders in {state_dir}: use a data directory whose parents others may pass (o+x), "
                    "or --no-tenant-uids to run actions as root (development only)"
                )
        # The homes (and the action folders) are inside it: the tenants' uids must pass through it,
        # not list it. A dispatcher's own folder is often made 0700 (mkdtemp, a private data dir).
        state_dir.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(state_dir.stat().st_mode)
        if mode & 0o011 != 0o011:
            state_dir.chmod(mode | 0o011)
        return cls(trust_tenants, TenantUsers(state_dir))

    def refusal(self, spec: pb.ActionSpec) -> str:
        """Why this dispatcher will not run the action; "" if it will."""
        if spec.command and not self.trust_tenants:
            return (
                "this dispatcher runs tenant code as Python tasks only: an explicit `command` needs a dispatcher "
                "started with --trust-tenants"
            )
        return ""

    def workdir_of(self, workdir: str) -> str:
        """The spec's workdir if it may be the action's working directory, else "" (its private place)."""
        return workdir if self.trust_tenants else ""

    def identity(self, tenant: str) -> Identity | None:
        """Who the tenant's actions run as; None: as the dispatcher. Blocking: call from a thread."""
        return self.users.identity(tenant) if self.users is not None else None
