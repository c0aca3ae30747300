"""BundleService on a real server and Redis: upload once, the caps, the tenant's own, and who may call what."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import redis.asyncio as aioredis

from fanout import errors
from fanout.bundles import ship
from fanout.dispatch.dispatcher import Dispatcher
from fanout.quota import keys
from fanout.quota.bundles import MAX_BUNDLE_BYTES, BundleStore
from fanout.quota.errors import QuotaExceeded
from fanout.server.app import ControlPlane
from fanout.server.auth import METHOD_ROLES
from fanout.server.redis_process import RedisProcess
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import bundles_pb2 as bpb
from fanout.v1 import bundles_pb2_grpc
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread
from tests.integration.test_role_matrix import DENIED, NOT_FOUND, OK, ROLES, World

BUNDLE = b"not really a tar.gz, the server does not look inside"
DIGEST = hashlib.sha256(BUNDLE).hexdigest()
UPLOADED = b"the bundle the role matrix uploads"


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def project_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A task defined in a project of its own, imported the way a caller's script imports it."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    module = f"shipme_{tmp_path.name.replace('-', '_')}"
    source = """
        import fanout
        env = fanout.TaskEnvironment("shipme")

        @env.task
        async def hello() -> str:
            return "hi"
    """
    (project / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(project))
    yield __import__(module).hello
    sys.modules.pop(module, None)


def test_a_bundle_is_uploaded_once_and_kept_under_the_tenant(
    tenant: Tenant, project_task: Any, redis_client: redis.Redis
) -> None:
    first = ship.ship(tenant.client, project_task)
    second = ship.ship(tenant.client, project_task)
    assert first is not None and second is not None
    assert (first.uploaded, second.uploaded) == (True, False)  # the second run found it there (HasBundle)
    assert first.bundle == second.bundle
    assert tenant.client.has_bundle(first.bundle.digest)
    packed = ship.packed(Path(project_task.fn.__code__.co_filename).parent)
    assert tenant.client.get_bundle(first.bundle.digest) == packed.data
    key = keys.TenantKeys(tenant.name).bundle(first.bundle.digest)
    assert key.startswith(f"fo:{{{tenant.name}}}:")  # under the tenant's hash tag
    assert redis_client.ttl(key) > 7 * 24 * 3600  # kept as long as a run using it may be
    # A run that uses it keeps it that long again.
    redis_client.expire(key, 100)
    run = tenant.client.create_run(pb.ActionSpec(task_ref="module:gone:f", bundle=first.bundle))
    tenant.client.abort_run(run.name)
    assert redis_client.ttl(key) > 7 * 24 * 3600


def test_another_tenant_can_neither_see_nor_fetch_a_bundle(
    loop_thread: LoopThread, plane: ControlPlane, endpoint: str, tenant: Tenant
) -> None:
    tenant.client.upload_bundle(DIGEST, BUNDLE)
    other = make_tenant(loop_thread, plane, endpoint, prefix="other")
    try:
        assert not other.client.has_bundle(DIGEST)
        with pytest.raises(errors.NotFound):
            other.client.get_bundle(DIGEST)
        # Nor start a run on it.
        spec = pb.ActionSpec(task_ref="module:m:f", bundle=pb.CodeBundle(digest=DIGEST, paths=["."]))
        with pytest.raises(errors.InvalidRequest, match="not uploaded"):
            other.client.create_run(spec)
    finally:
        other.client.close()
    assert tenant.client.get_bundle(DIGEST) == BUNDLE


def chunks(*items: bpb.BundleChunk) -> Iterator[bpb.BundleChunk]:
    yield from items


def test_over_the_cap_or_not_matching_its_digest_an_upload_is_refused_and_stores_nothing(tenant: Tenant) -> None:
    big = MAX_BUNDLE_BYTES + 1
    with pytest.raises(errors.QuotaExceeded, match=f"max_bundle_bytes exceeded: limit {MAX_BUNDLE_BYTES}.*{big}"):
        tenant.client.call(tenant.client.bundles.UploadBundle, chunks(bpb.BundleChunk(digest=DIGEST, size=big)))
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(errors.InvalidRequest, match="do not hash"):
        tenant.client.upload_bundle(wrong, BUNDLE)
    with pytest.raises(errors.InvalidRequest, match="ended after"):
        tenant.client.call(
            tenant.client.bundles.UploadBundle,
            chunks(bpb.BundleChunk(digest=DIGEST, size=len(BUNDLE) + 1, data=BUNDLE)),
        )
    with pytest.raises(errors.InvalidRequest, match="64 lowercase hex"):
        tenant.client.upload_bundle("../../x", BUNDLE)
    with pytest.raises(errors.InvalidRequest, match="at least one chunk"):
        tenant.client.call(tenant.client.bundles.UploadBundle, chunks())
    assert not tenant.client.has_bundle(wrong) and not tenant.client.has_bundle(DIGEST)


def test_concurrent_uploads_never_pass_the_tenant_cap(
    loop_thread: LoopThread, redis_server: RedisProcess, tenant: Tenant
) -> None:
    blobs = [BUNDLE + bytes([i]) for i in range(10)]

    async def upload_all() -> list[bool | BaseException]:
        client = aioredis.Redis.from_url(redis_server.url)
        # Two stores, as two servers would have, room for three of the ten.
        stores = [BundleStore(client, max_tenant_bytes=3 * len(blobs[0])) for _ in range(2)]
        try:
            return await asyncio.gather(
                *(
                    stores[i % 2].put(tenant.name, hashlib.sha256(blob).hexdigest(), blob, ttl=60)
                    for i, blob in enumerate(blobs)
                ),
                return_exceptions=True,
            )
        finally:
            await client.aclose()

    outcomes = loop_thread.run(upload_all())
    refused = [o for o in outcomes if isinstance(o, QuotaExceeded)]
    assert outcomes.count(True) == 3 and len(refused) == 7, outcomes
    assert all(r.limit_name == "max_tenant_bundle_bytes" for r in refused)
    stored = [blob for blob in blobs if tenant.client.has_bundle(hashlib.sha256(blob).hexdigest())]
    assert len(stored) == 3


def test_uploads_one_after_another_never_pass_the_tenant_cap(
    loop_thread: LoopThread, redis_server: RedisProcess, tenant: Tenant
) -> None:
    # A finished upload's index entry once had a fractional expiry (touch wrote time.time() + ttl),
    # which the next reservation read as malformed and dropped: it no longer counted against the cap.
    blobs = [BUNDLE + bytes([i]) for i in range(4)]

    async def upload_in_turn() -> list[bool | BaseException]:
        client = aioredis.Redis.from_url(redis_server.url)
        store = BundleStore(client, max_tenant_bytes=3 * len(blobs[0]))
        outcomes: list[bool | BaseException] = []
        try:
            for blob in blobs:
                try:
                    outcomes.append(await store.put(tenant.name, hashlib.sha256(blob).hexdigest(), blob, ttl=60))
                except QuotaExceeded as exc:
                    outcomes.append(exc)
        finally:
            await client.aclose()
        return outcomes

    outcomes = loop_thread.run(upload_in_turn())
    assert outcomes[:3] == [True, True, True], outcomes
    assert isinstance(outcomes[3], QuotaExceeded) and outcomes[3].limit_name == "max_tenant_bundle_bytes"


def test_a_run_naming_a_missing_or_malformed_bundle_is_refused(tenant: Tenant) -> None:
    with pytest.raises(errors.InvalidRequest, match="not uploaded"):
        tenant.client.create_run(pb.ActionSpec(task_ref="module:m:f", bundle=pb.CodeBundle(digest="a" * 64)))
    with pytest.raises(errors.InvalidRequest, match=r"bundle\.digest"):
        tenant.client.create_run(pb.ActionSpec(task_ref="module:m:f", bundle=pb.CodeBundle(digest="A" * 64)))
    tenant.client.upload_bundle(DIGEST, BUNDLE)
    with pytest.raises(errors.InvalidRequest, match="inside the bundle"):
        tenant.client.create_run(
            pb.ActionSpec(task_ref="module:m:f", bundle=pb.CodeBundle(digest=DIGEST, paths=["../../etc"]))
        )


# Who may call what -----------------------------------------------------------


@pytest.fixture
def world(
    loop_thread: LoopThread, plane: ControlPlane, endpoint: str, tenant: Tenant, dispatcher: Dispatcher
) -> Iterator[World]:
    other = make_tenant(loop_thread, plane, endpoint, prefix="other")
    w = World(loop_thread, plane, endpoint, tenant, other)
    tenant.client.upload_bundle(DIGEST, BUNDLE)
    yield w
    for run in w.runs:
        tenant.client.abort_run(run)
    w.channel.close()
    other.client.close()


def call(world: World, role: str, method: str, request: Any) -> grpc.StatusCode:
    stub = bundles_pb2_grpc.BundleServiceStub(world.channel)
    metadata = [("authorization", f"Bearer {world.tokens[role]}")]
    try:
        if method == "UploadBundle":
            stub.UploadBundle(iter(request), metadata=metadata, timeout=10)
        elif method == "GetBundle":
            list(stub.GetBundle(request, metadata=metadata, timeout=10))
        else:
            getattr(stub, method)(request, metadata=metadata, timeout=10)
        return OK
    except grpc.RpcError as exc:
        return exc.code()


def test_every_bundle_rpc_against_every_role(world: World) -> None:
    tenants = {role: OK if role in ("tenant", "other_tenant") else DENIED for role in ROLES}
    # The runtime fetches with its action's token; another tenant's digest is NOT_FOUND like a missing one.
    fetchers = {**tenants, "other_tenant": NOT_FOUND, "action_this_run": OK, "action_other_run": OK}
    table: dict[str, tuple[Any, dict[str, grpc.StatusCode]]] = {
        "HasBundle": (bpb.HasBundleRequest(digest=DIGEST), tenants),
        # Another bundle: the other tenant's upload must not give it the one GetBundle asks for.
        "UploadBundle": ([bpb.BundleChunk(digest=digest_of(UPLOADED), size=len(UPLOADED), data=UPLOADED)], tenants),
        "GetBundle": (bpb.GetBundleRequest(digest=DIGEST), fetchers),
    }
    covered = {m.rsplit("/", 1)[1] for m in METHOD_ROLES if m.startswith("/fanout.v1.BundleService/")}
    assert covered == set(table), "every BundleService RPC is in the matrix"
    got = {
        (method, role): call(world, role, method, request) for method, (request, _) in table.items() for role in ROLES
    }
    want = {(method, role): status for method, (_, by_role) in table.items() for role, status in by_role.items()}
    assert got == want
