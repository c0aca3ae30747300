"""Tenant uids: allocated once from FIRST_UID up, persisted, shared by dispatchers on one state folder."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from fanout.dispatch.sandbox import FIRST_UID, STATE_FILE, Sandbox, TenantUsers
from fanout.errors import ConfigError
from fanout.v1 import actions_pb2 as pb

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chowning homes to other uids needs root")


@needs_root
def test_each_tenant_gets_its_own_uid_and_private_home_kept_across_restarts(tmp_path: Path) -> None:
    users = TenantUsers(tmp_path)
    a, b = users.identity("acme"), users.identity("globex")

    assert (a.uid, b.uid) == (FIRST_UID, FIRST_UID + 1)
    assert users.identity("acme") == a
    for who in (a, b):
        info = who.home.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (who.uid, who.gid, 0o700)
    # Another dispatcher on the same folder (or this one restarted) sees the same map.
    assert TenantUsers(tmp_path).identity("globex") == b
    assert json.loads((tmp_path / STATE_FILE).read_text()) == {"acme": a.uid, "globex": b.uid}
    assert stat.S_IMODE((tmp_path / STATE_FILE).stat().st_mode) == 0o600


@needs_root
def test_a_corrupt_state_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text('{"acme": "not a uid"}')

    with pytest.raises(RuntimeError, match="not a map of tenant to uid"):
        TenantUsers(tmp_path).identity("globex")
    assert (tmp_path / STATE_FILE).read_text() == '{"acme": "not a uid"}'


def test_an_untrusting_sandbox_refuses_commands_and_ignores_workdirs() -> None:
    untrusting, trusting = Sandbox(trust_tenants=False), Sandbox(trust_tenants=True)
    command = pb.ActionSpec(command=["sh", "-c", "true"])

    assert "--trust-tenants" in untrusting.refusal(command)
    assert untrusting.refusal(pb.ActionSpec(task_ref="module:m:f")) == ""
    assert trusting.refusal(command) == ""
    assert untrusting.workdir_of("/srv/project") == ""
    assert trusting.workdir_of("/srv/project") == "/srv/project"


@needs_root
def test_tenant_uids_need_a_state_folder_others_can_pass_through(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)

    with pytest.raises(ConfigError, match="--no-tenant-uids"):
        Sandbox.for_dispatcher(closed / "data", trust_tenants=False)
    assert Sandbox.for_dispatcher(closed / "data", trust_tenants=False, tenant_uids=False).users is None


@needs_root
def test_a_private_state_folder_is_made_passable_for_the_tenants_uids() -> None:
    # Found by the benchmark: its dispatcher's folder came from mkdtemp (0700), so no tenant
    # could reach its home inside it and every action failed on its bundle cache.
    state = Path(tempfile.mkdtemp(prefix="fanout-state-"))  # not tmp_path: pytest's root is closed to others
    try:
        _check_passable(state)
    finally:
        shutil.rmtree(state)


def _check_passable(state: Path) -> None:
    sandbox = Sandbox.for_dispatcher(state, trust_tenants=False)

    assert sandbox.users is not None
    assert stat.S_IMODE(state.stat().st_mode) == 0o711
    home = sandbox.identity("acme")
    assert home is not None
    # The tenant's uid must reach its home through the state folder: checked by /bin/sh's test under
    # that uid, started by setpriv. Not by a fork of this process, nor by subprocess's user=: both
    # fork() here and run gRPC's after-fork handlers while the session's gRPC threads are busy
    # (seen: the child crashed with SIGSEGV, once each way). Without a uid change, subprocess uses
    # vfork, which runs none. And not this interpreter: the tenant's uid may not reach the virtualenv.
    probe = [
        "setpriv", f"--reuid={home.uid}", f"--regid={home.gid}", "--clear-groups",
        "/bin/sh", "-c", 'test -w "$1" && test -x "$1"', "probe", str(home.home),
    ]  # fmt: skip
    reached = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    assert reached.returncode == 0, reached.stderr
