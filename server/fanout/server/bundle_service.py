"""fanout.v1.BundleService: a tenant's code bundles, uploaded by the SDK, fetched by the runtime.

The tenant comes from the token: another tenant's digest is NOT_FOUND, exactly
like a missing one. An upload is read whole (at most the per-bundle cap) and
checked against its digest before anything is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from fanout.quota.bundles import BundleStore, check_digest, term
from fanout.quota.limits import LimitStore
from fanout.server.auth import principal
from fanout.server.status import invalid
from fanout.v1 import bundles_pb2 as bpb
from fanout.v1 import bundles_pb2_grpc


class BundleService(bundles_pb2_grpc.BundleServiceServicer):
    def __init__(self, bundles: BundleStore, limits: LimitStore) -> None:
        self._bundles = bundles
        self._limits = limits

    async def ttl(self, tenant: str) -> int:
        return term((await self._limits.effective(tenant)).retention_seconds)

    async def HasBundle(
        self, request: bpb.HasBundleRequest, context: aio.ServicerContext[Any, Any]
    ) -> bpb.HasBundleResponse:
        return bpb.HasBundleResponse(present=await self._bundles.has(principal().tenant, check_digest(request.digest)))

    async def UploadBundle(
        self, requests: AsyncIterator[bpb.BundleChunk], context: aio.ServicerContext[Any, Any]
    ) -> bpb.UploadBundleResponse:
        tenant = principal().tenant
        digest, size, parts, received = "", 0, [], 0
        async for chunk in requests:
            if not digest:
                digest, size = check_digest(chunk.digest), chunk.size
                self._bundles.check_size(size)  # refused before reading the rest
            elif chunk.digest and chunk.digest != digest:
                raise invalid(f"chunk names bundle {chunk.digest[:80]!r} in an upload of {digest}")
            received += len(chunk.data)
            if received > size:
                raise invalid(f"the upload sent more than the {size} bytes its first chunk announced")
            parts.append(chunk.data)
        if not digest:
            raise invalid("an upload needs at least one chunk naming the digest and size")
        if received != size:
            raise invalid(f"the upload ended after {received} of the {size} bytes announced")
        stored = await self._bundles.put(tenant, digest, b"".join(parts), await self.ttl(tenant))
        return bpb.UploadBundleResponse(digest=digest, size=size, already_present=not stored)

    async def GetBundle(
        self, request: bpb.GetBundleRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bpb.BundleChunk]:
        tenant = principal().tenant
        digest = check_digest(request.digest)
        size = await self._bundles.touch(tenant, digest, await self.ttl(tenant))  # a fetch is a use
        first = True
        async for data in self._bundles.chunks(tenant, digest):
            yield bpb.BundleChunk(digest=digest, size=size, data=data) if first else bpb.BundleChunk(data=data)
            first = False
