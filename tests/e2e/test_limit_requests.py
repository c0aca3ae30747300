"""A tenant asks for a bigger fanout and an admin approves it, all through `fanout` subprocesses, on two
servers sharing one Redis: the tenant talks to one, the admin to the other."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.server.redis_process import RedisProcess
from tests.e2e.test_up import FANOUT, ROOT, start_up, stop

pytestmark = pytest.mark.e2e

TASKS = str(ROOT / "tests" / "tasks" / "fanout_tasks.py")


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[dict[str, str], str, str]]:
    """`fanout up` (server A with a dispatcher) and a lone `fanout server` (B) on one Redis and one key;
    the environment for the CLI, and both addresses."""
    store = RedisProcess(tmp_path / "redis").start()
    shared = {**os.environ, "FANOUT_REDIS_URL": store.url, "FANOUT_SIGNING_KEY_FILE": str(tmp_path / "signing-key")}
    for name in ("FANOUT_TOKEN", "FANOUT_ENDPOINT"):
        shared.pop(name, None)
    up = start_up(tmp_path / "state", shared)
    server_b = subprocess.Popen(
        [FANOUT, "server"],
        env={**shared, "FANOUT_LISTEN": "127.0.0.1:0", "FANOUT_METRICS_PORT": "-1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server_b.stdout is not None
        ready = server_b.stdout.readline()
        assert ready.startswith("fanout server listening on "), ready
        b = ready.split()[4]
        a = next(
            line.split()[1] for line in (tmp_path / "state" / "config.yaml").read_text().splitlines()
            if line.startswith("endpoint:")
        )  # fmt: skip
        env = {k: v for k, v in shared.items() if k != "FANOUT_REDIS_URL"}  # clients never see Redis
        env["FANOUT_CONFIG"] = str(tmp_path / "state" / "config.yaml")
        yield env, a, b
    finally:
        stop(server_b)
        stop(up)
        store.stop()


def test_request_approve_then_admitted_through_the_cli_on_two_servers(
    two_servers: tuple[dict[str, str], str, str], tmp_path: Path
) -> None:
    env, server_a, server_b = two_servers

    def fanout(*args: str, endpoint: str, admin: bool = False) -> subprocess.CompletedProcess[str]:
        flags = ["--endpoint", endpoint] + (["--token-file", str(tmp_path / "alice")] if admin else [])
        return subprocess.run(
            [FANOUT, *args, *flags], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False
        )

    # An admin of the platform gets a named token from the bootstrap one; what it does is audited under that name.
    minted = fanout("admin", "token", "create", "--role", "admin", "--name", "ops-alice", "--owner", "alice",
                    endpoint=server_a)  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    (tmp_path / "alice").write_text(minted.stdout)
    small = fanout("admin", "quota", "set", "default", "--max-fanout", "3", "--reason", "start small",
                   endpoint=server_a, admin=True)  # fmt: skip
    assert small.returncode == 0, small.stderr

    check = fanout("quota", "check", "--fanout", "5", endpoint=server_b)
    assert check.returncode == 1 and "refused now by max_fanout" in check.stdout, check.stdout + check.stderr
    refused = fanout("run", TASKS, "fan_squares", "4", "--wait", endpoint=server_b)
    assert refused.returncode == 1
    assert "fanout quota request --max-fanout N --reason TEXT" in refused.stderr, refused.stderr

    filed = fanout("quota", "request", "--max-fanout", "10", "--reason", "nightly backfill", "--json",
                   endpoint=server_b)  # fmt: skip
    assert filed.returncode == 0, filed.stderr
    request_id = json.loads(filed.stdout)["id"]
    mine = fanout("quota", "requests", endpoint=server_b)
    assert request_id in mine.stdout and "pending" in mine.stdout

    pending = fanout("admin", "requests", "list", "--json", endpoint=server_a, admin=True)
    assert [r["id"] for r in json.loads(pending.stdout)] == [request_id]
    approved = fanout("admin", "requests", "approve", request_id, "--reason", "ok for tonight",
                      endpoint=server_a, admin=True)  # fmt: skip
    assert approved.returncode == 0 and "approved" in approved.stdout, approved.stderr

    # Approved on A, in force on B at once.
    check = fanout("quota", "check", "--fanout", "5", endpoint=server_b)
    assert check.returncode == 0 and "room for 5 more" in check.stdout, check.stdout
    ran = fanout("run", TASKS, "fan_squares", "4", "--wait", "--json", endpoint=server_b)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outputs"] == [0, 1, 4, 9]

    mine = fanout("quota", "requests", "--json", endpoint=server_b)
    assert [(r["id"], r["state"], r["decided_by"]) for r in json.loads(mine.stdout)] == [
        (request_id, "approved", "ops-alice")
    ]
    audit = fanout("admin", "audit", "--actor", "ops-alice", "--json", endpoint=server_a, admin=True)
    entries = json.loads(audit.stdout)
    assert [(e["action"], e.get("subject", "")) for e in entries] == [
        ("approve_request", request_id),
        ("set_limit", ""),
    ]
    assert "ok for tonight" in entries[0]["reason"] and "nightly backfill" in entries[0]["reason"]
    assert all(e["actor"] == "ops-alice" for e in entries)
