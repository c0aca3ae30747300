"""A whole Fanout deployment for the throughput benchmarks, one process per part.

A private Redis (`RedisProcess`), `fanout server` and `fanout dispatcher` (local
process backend) run as separate child processes, rather than `fanout up`, which
runs the server and the dispatcher in one process: apart, the CPU each uses can
be read from /proc (see procs.cpu_by_kind). Tenants are created through the
admin API with the limits a benchmark asks for.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.procs import clean_env, fanout_cmd, started
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.server.redis_process import RedisProcess

# Redis' INFO persistence flags of work done in a child process of its own.
BACKGROUND_WORK = ("rdb_bgsave_in_progress", "aof_rewrite_in_progress", "aof_rewrite_scheduled")
SETTLE_TIMEOUT = 60.0

# The server-wide ceilings, so per-tenant limits (set through the admin API) decide.
SERVER_LIMITS = {
    "FANOUT_MAX_FANOUT": str(10_000_000),
    "FANOUT_MAX_CONCURRENCY": str(1_000_000),
    "FANOUT_MAX_QUEUED": str(10_000_000),
    "FANOUT_MAX_STORED_BYTES": str(8 << 30),
}


@dataclass
class Deployment:
    endpoint: str
    redis_url: str
    pids: dict[str, int]  # "redis", "server", "dispatcher"
    admin: Client
    tokens: dict[str, str] = field(default_factory=dict)

    def tenant(self, name: str, **limits: int) -> ClientConfig:
        """Create tenant `name` with these limits (max_fanout=..., max_concurrency=...); its client config."""
        if name not in self.tokens:
            self.admin.create_tenant(name)
            self.tokens[name] = self.admin.create_token("tenant", name)
        if limits:
            self.admin.set_limits(name, "benchmark", **limits)
        return ClientConfig(endpoint=self.endpoint, token=self.tokens[name])

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> float:
        """Wait until Redis has no background save or rewrite going (a fork of it, busy for a second or
        more after a big run) or `timeout` passed; the seconds waited. A timed run that follows then
        pays only for the background work it causes itself, not for its predecessor's."""
        began = time.monotonic()
        with redis.Redis.from_url(self.redis_url) as r:
            while time.monotonic() - began < timeout:
                state = r.info("persistence")
                if not any(state.get(flag) for flag in BACKGROUND_WORK):
                    break
                time.sleep(0.1)
        return time.monotonic() - began


@contextmanager
def deployment(capacity: int) -> Iterator[Deployment]:
    """Redis, a server and a dispatcher running `capacity` actions at once; all stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="fanout-bench-deploy-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        store = RedisProcess(root / "redis").start()
        stack.callback(store.stop)
        admin_file = root / "admin-token"
        server_cmd = fanout_cmd(
            "server", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--admin-token-file", str(admin_file)
        )
        # The Redis URL carries its password: in the environment, never on a command line `ps` shows.
        server_env = clean_env(
            FANOUT_REDIS_URL=store.url, FANOUT_SIGNING_KEY_FILE=str(root / "signing-key"), **SERVER_LIMITS
        )
        server = stack.enter_context(started(server_cmd, root / "server", r"listening on (\S+)", server_env))
        endpoint = server.ready.group(1)
        admin = stack.enter_context(Client(ClientConfig(endpoint=endpoint, token=admin_file.read_text().strip())))
        dispatcher_cmd = fanout_cmd(
            "dispatcher", "--endpoint", endpoint, "--capacity", str(capacity), "--work-dir", str(root / "actions")
        )
        dispatcher_env = clean_env(FANOUT_TOKEN=admin.create_token("dispatcher"))
        # The dispatcher prints no ready line: this empty pattern matches at once; the first run waits for it.
        dispatcher = stack.enter_context(started(dispatcher_cmd, root / "dispatcher", "", dispatcher_env))
        with redis.Redis.from_url(store.url) as r:
            redis_pid = int(r.info("server")["process_id"])
        pids = {"redis": redis_pid, "server": server.pid, "dispatcher": dispatcher.pid}
        yield Deployment(endpoint, store.url, pids, admin)
