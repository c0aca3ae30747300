"""The admin's tenant and token commands as a user types them, against `fanout up`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_up import FANOUT, start_up, stop

pytestmark = pytest.mark.e2e

Fanout = Callable[..., subprocess.CompletedProcess[str]]


def cli(tmp_path: Path) -> Fanout:
    env = {**os.environ, "FANOUT_CONFIG": str(tmp_path / "state" / "config.yaml")}
    env.pop("FANOUT_TOKEN", None)
    env.pop("FANOUT_ENDPOINT", None)

    def fanout(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FANOUT, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )

    return fanout


def test_tenants_tokens_quotas_and_the_audit_from_the_command_line(tmp_path: Path) -> None:
    proc = start_up(tmp_path / "state")
    fanout = cli(tmp_path)
    try:
        created = fanout("admin", "tenant", "create", "acme", "--json")
        assert created.returncode == 0, created.stderr
        assert fanout("admin", "tenant", "list").stdout.split() == ["acme", "default"]
        shown = json.loads(fanout("admin", "tenant", "get", "acme", "--json").stdout)
        assert shown["tenant"] == "acme" and "near" not in shown

        minted = fanout("admin", "token", "create", "--role", "tenant", "--tenant", "acme", "--name", "acme-ci",
                        "--owner", "ci team")  # fmt: skip
        assert minted.returncode == 0 and "name acme-ci" in minted.stderr, minted.stderr
        secret = minted.stdout.strip()
        listed = fanout("admin", "token", "list", "--tenant", "acme")
        assert "acme-ci" in listed.stdout and "ci team" in listed.stdout and secret not in listed.stdout
        refused = fanout("admin", "token", "rotate", secret)
        assert refused.returncode == 2 and "not the token" in refused.stderr
        rotated = fanout("admin", "token", "rotate", "acme-ci")
        assert rotated.returncode == 0 and rotated.stdout.strip() not in ("", secret)
        (tmp_path / "old").write_text(secret)
        (tmp_path / "new").write_text(rotated.stdout)
        assert fanout("quota", "--token-file", str(tmp_path / "old")).returncode == 1
        assert fanout("quota", "--token-file", str(tmp_path / "new")).returncode == 0
        assert fanout("admin", "token", "revoke", "acme-ci").returncode == 0
        assert fanout("quota", "--token-file", str(tmp_path / "new")).returncode == 1

        later = fanout("admin", "quota", "set", "acme", "--max-fanout", "99", "--reason", "launch", "--until", "7d")
        assert later.returncode == 0 and "until" in later.stdout and "then the default" in later.stdout, later.stdout
        bad_time = fanout("admin", "quota", "set", "acme", "--max-fanout", "99", "--reason", "x", "--until", "soon")
        assert bad_time.returncode == 2 and "cannot read the time" in bad_time.stderr
        quotas = fanout("admin", "quota", "list")
        assert [line.split()[0] for line in quotas.stdout.splitlines()] == ["acme", "default"]
        assert "fanout        99" in quotas.stdout.splitlines()[0]

        audit = json.loads(fanout("admin", "audit", "--tenant", "acme", "--since", "1h", "--json").stdout)
        assert [e["action"] for e in audit] == [
            "set_limit", "revoke_token", "rotate_token", "create_token", "create_token", "create_tenant"
        ]  # fmt: skip
        assert {e["actor"] for e in audit} == {audit[0]["actor"]} and audit[0]["actor"].startswith("admin-")
        assert json.loads(fanout("admin", "audit", "--actor", "nobody", "--json").stdout) == []

        check = fanout("quota", "check", "--fanout", "3", "--json")
        assert check.returncode == 0 and json.loads(check.stdout)["admitted"] is True

        deleted = fanout("admin", "tenant", "delete", "acme", "--reason", "trial over")
        assert deleted.returncode == 0 and "deleted" in deleted.stdout, deleted.stderr
        assert fanout("admin", "tenant", "list").stdout.split() == ["default"]
        gone = fanout("admin", "tenant", "get", "acme")
        assert gone.returncode == 1 and "not found" in gone.stderr
    finally:
        stop(proc)


def test_placing_a_tenant_from_the_command_line(tmp_path: Path) -> None:
    proc = start_up(tmp_path / "state")
    fanout = cli(tmp_path)
    try:
        assert fanout("admin", "tenant", "create", "acme").returncode == 0
        placed = fanout("admin", "tenant", "set", "acme", "--placement", "byoc", "--reason", "their cluster")
        assert placed.returncode == 0 and placed.stdout.strip() == "tenant acme: placement byoc", placed.stderr
        assert json.loads(fanout("admin", "tenant", "get", "acme", "--json").stdout)["placement"] == "byoc"
        assert "BYOC" in fanout("admin", "tenant", "get", "acme").stdout

        unknown = fanout("admin", "tenant", "set", "nobody", "--placement", "byoc", "--reason", "r")
        assert unknown.returncode == 1 and "not found" in unknown.stderr
        no_reason = fanout("admin", "tenant", "set", "acme", "--placement", "serverless")
        assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
        bad = fanout("admin", "tenant", "set", "acme", "--placement", "cloud", "--reason", "r")
        assert bad.returncode == 2 and "invalid choice" in bad.stderr

        [entry] = [e for e in json.loads(fanout("admin", "audit", "--tenant", "acme", "--json").stdout)
                   if e["action"] == "set_placement"]  # fmt: skip
        assert (entry["subject"], entry["reason"]) == ("serverless -> byoc", "their cluster")
    finally:
        stop(proc)
