"""Code bundles in Redis: a tenant's task source, stored once per digest, capped and expiring.

A bundle is a hash of fixed-size chunks under the tenant's hash tag (keys.py).
Storing reserves room first (bundle_reserve.lua: per-bundle and per-tenant
byte caps, a bounded count, held briefly), then writes the chunks and finally
"n", the chunk count, then keeps the bundle for its full term: a reader sees
a bundle whole or not at all, and writers of the same digest write the same
bytes, so concurrent uploads need no lock. Every run
that uses a bundle, and every fetch, keeps it for another `ttl` (touch).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys
from fanout.quota.errors import InvalidArgument, NotFound, QuotaExceeded
from fanout.quota.failclosed import fail_closed
from fanout.quota.scripts import source

DIGEST_RE = re.compile(r"^[0-9a-f]{64}\Z")
# Stored and sent in pieces of this size: each Redis command and gRPC message stays small.
CHUNK_BYTES = 1 << 20
MAX_BUNDLE_BYTES = 20 << 20
MAX_TENANT_BUNDLE_BYTES = 200 << 20
MAX_BUNDLES_PER_TENANT = 500
# Room reserved for an upload counts this long at most: an upload that dies between reserving and
# writing holds none of the tenant's cap for longer.
RESERVE_SECONDS = 600
# A bundle outlives the retention of the runs using it by this much, counted from its last use.
GRACE_SECONDS = 24 * 3600


def term(retention_seconds: int) -> int:
    """How long a bundle is kept from its last use (a run created, a fetch): as long as a run started then may be."""
    return retention_seconds + GRACE_SECONDS


def check_digest(digest: str) -> str:
    if not DIGEST_RE.match(digest):
        raise InvalidArgument(f"bundle digest {digest[:80]!r} is not a sha256 in 64 lowercase hex digits")
    return digest


class BundleStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        max_bundle_bytes: int = MAX_BUNDLE_BYTES,
        max_tenant_bytes: int = MAX_TENANT_BUNDLE_BYTES,
        max_bundles: int = MAX_BUNDLES_PER_TENANT,
    ) -> None:
        self._redis: Any = redis
        self._reserve = redis.register_script(source("bundle_reserve"))
        self._touch = redis.register_script(source("bundle_touch"))
        self.max_bundle_bytes = max_bundle_bytes
        self.max_tenant_bytes = max_tenant_bytes
        self.max_bundles = max_bundles

    def check_size(self, size: int) -> None:
        if size > self.max_bundle_bytes:
            raise QuotaExceeded("max_bundle_bytes", self.max_bundle_bytes, 0, size)

    @fail_closed
    async def has(self, tenant: str, digest: str) -> bool:
        return bool(await self._redis.hexists(keys.TenantKeys(tenant).bundle(check_digest(digest)), "n"))

    @fail_closed
    async def put(self, tenant: str, digest: str, data: bytes, ttl: int) -> bool:
        """Store `data` as bundle `digest` for `ttl` seconds; False when it was there already (kept longer).

        The digest must be the sha256 of the bytes; over a cap is QuotaExceeded and stores nothing.
        """
        check_digest(digest)
        self.check_size(len(data))
        if hashlib.sha256(data).hexdigest() != digest:
            raise InvalidArgument(f"the bundle's bytes do not hash to {digest}: upload cut short or corrupted")
        k = keys.TenantKeys(tenant)
        now = int(time.time())
        present, refusal, used = await self._reserve(
            keys=[k.bundles, k.bundle(digest)],
            args=[digest, len(data), now, now + min(ttl, RESERVE_SECONDS), self.max_tenant_bytes, self.max_bundles],
        )
        if present:
            await self.touch(tenant, digest, ttl)
            return False
        if refusal == 1:
            raise QuotaExceeded("max_bundles", self.max_bundles, self.max_bundles, 1)
        if refusal == 2:
            raise QuotaExceeded("max_tenant_bundle_bytes", self.max_tenant_bytes, int(used), len(data))
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        pipe = self._redis.pipeline(transaction=False)
        for i, chunk in enumerate(chunks):
            pipe.hset(k.bundle(digest), str(i), chunk)
        pipe.hset(k.bundle(digest), "size", len(data))
        pipe.hset(k.bundle(digest), "n", len(chunks))  # last: the bundle is complete from here on
        pipe.expire(k.bundle(digest), ttl)
        await pipe.execute()
        await self.touch(tenant, digest, ttl)  # the reservation becomes the bundle's full term
        return True

    @fail_closed
    async def touch(self, tenant: str, digest: str, ttl: int) -> int:
        """Keep the bundle another `ttl` seconds; its size. NotFound when the tenant has no such bundle."""
        k = keys.TenantKeys(tenant)
        expires = int(time.time()) + ttl  # whole seconds: bundle_reserve.lua reads the entry back
        size = int(await self._touch(keys=[k.bundles, k.bundle(check_digest(digest))], args=[digest, ttl, expires]))
        if size < 0:
            raise NotFound(f"bundle {digest} not found; upload it first")
        return size

    async def chunks(self, tenant: str, digest: str) -> AsyncIterator[bytes]:
        """The bundle's bytes in order, one chunk per Redis read. NotFound when absent."""
        key = keys.TenantKeys(tenant).bundle(check_digest(digest))
        count = await self._count(key)
        for i in range(count):
            chunk = await self._chunk(key, i)
            if chunk is None:  # expired while being read
                raise NotFound(f"bundle {digest} expired while it was read")
            yield chunk

    @fail_closed
    async def _count(self, key: str) -> int:
        n = await self._redis.hget(key, "n")
        if n is None:
            raise NotFound(f"bundle {key.rsplit(':', 1)[-1]} not found; upload it first")
        return int(n)

    @fail_closed
    async def _chunk(self, key: str, index: int) -> bytes | None:
        chunk: bytes | None = await self._redis.hget(key, str(index))
        return chunk
