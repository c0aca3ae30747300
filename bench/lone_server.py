"""A private Redis and one `fanout server` with no dispatcher: what the admission benches measure."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.procs import clean_env, fanout_cmd, running
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.server.redis_process import RedisProcess

SERVER_MODE = "subprocess (`fanout server`)"


@dataclass(frozen=True)
class LoneServer:
    endpoint: str
    admin_token: str
    redis_url: str

    def tenant_token(self, tenant: str) -> str:
        """Create `tenant` and return a token of it."""
        with Client(ClientConfig(endpoint=self.endpoint, token=self.admin_token)) as admin:
            admin.create_tenant(tenant)
            return admin.create_token("tenant", tenant)


@contextmanager
def lone_server(prefix: str, max_fanout: int = 1_000_000) -> Iterator[LoneServer]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        store = RedisProcess(root / "redis").start()
        try:
            admin_file = root / "admin-token"
            cmd = fanout_cmd(
                "server", "--listen", "127.0.0.1:0", "--metrics-port", "-1", "--admin-token-file", str(admin_file)
            )
            # The Redis URL carries its password: in the environment, never on a command line `ps` shows.
            env = clean_env(
                FANOUT_MAX_FANOUT=str(max_fanout),
                FANOUT_REDIS_URL=store.url,
                FANOUT_SIGNING_KEY_FILE=str(root / "signing-key"),
            )
            with running(cmd, root / "server", r"listening on (\S+)", env) as ready:
                yield LoneServer(ready.group(1), admin_file.read_text().strip(), store.url)
        finally:
            store.stop()
