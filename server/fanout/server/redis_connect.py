"""One place that turns a store URL into a Redis client: a single server or a Redis Cluster.

``redis://`` and ``rediss://`` name one server. ``redis+cluster://host:port`` (or
``rediss+cluster://``) names any node of a Redis Cluster: the client learns the
slot map from it and sends each command to the master that holds its keys. The
rest of the code does not care which it got: every script and every transaction
touches the keys of one hash slot (a tenant's ``{tenant}`` tag, or the tokens'
``{_tokens}`` tag), and keys of different slots only meet in plain pipelines.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

_CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}


def cluster_url(url: str) -> str | None:
    """The plain URL of a cluster node if `url` names a Redis Cluster, else None."""
    for scheme, plain in _CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            return plain + url.removeprefix(scheme)
    return None


def connect_async(url: str, *, connect_timeout: float, socket_timeout: float, max_connections: int) -> aioredis.Redis:
    """The asyncio client the server uses. No silent resend: a command that timed out may have run
    (a script may have admitted or released), and an unreachable Redis must fail the RPC now
    (UNAVAILABLE), not after a chain of backed-off retries. At most `max_connections` to one
    server; a command beyond them waits for one (up to the socket timeout) instead of failing."""
    node = cluster_url(url)
    if node is not None:
        cluster: Any = AsyncRedisCluster.from_url(
            node,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry=AsyncRetry(NoBackoff(), 0),
            health_check_interval=10,
        )
        return cluster  # same command surface for everything the server calls
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        retry=AsyncRetry(NoBackoff(), 0),
        health_check_interval=10,
    )
    return aioredis.Redis.from_pool(pool)


def connect_sync(url: str, timeout: float) -> Any:
    """A blocking client (the metrics collector runs in the HTTP server's thread)."""
    node = cluster_url(url)
    if node is not None:
        return RedisCluster.from_url(
            node, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
