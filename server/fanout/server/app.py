"""Build and run the gRPC server: `create_server(settings)` is the factory.

Servers are stateless; any number can run against one Redis. Each also runs
the reaper that reclaims expired leases (atomic in Lua, so servers reaping
at once do not conflict).
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY

from fanout.quota.actions import ActionStore
from fanout.quota.audit import AuditLog
from fanout.quota.bundles import BundleStore
from fanout.quota.errors import StoreError
from fanout.quota.failclosed import raise_if_cancelling
from fanout.quota.limits import LimitStore
from fanout.quota.listing import Listing
from fanout.quota.reports import ReportStore
from fanout.quota.requests import RequestStore
from fanout.quota.scripts import Scripts
from fanout.quota.tenants import TenantStore
from fanout.quota.tokens import TokenStore
from fanout.quota.traces import TraceStore
from fanout.server import event_log, metrics, redis_connect, signing_key
from fanout.server.actions_service import WATCH_BLOCK_MS, ActionService
from fanout.server.admin_service import AdminService
from fanout.server.auth import AuthInterceptor
from fanout.server.bundle_service import BundleService
from fanout.server.collector import TenantCollector, pools
from fanout.server.dispatch_service import DispatchService
from fanout.server.errors import StartupError
from fanout.server.grpc_metrics import MetricsInterceptor
from fanout.server.quota_service import QuotaService
from fanout.server.run_page import RunPage
from fanout.server.run_views import PageLinks
from fanout.server.settings import Settings
from fanout.server.timed_scripts import timed
from fanout.server.wakeup import Wakeup
from fanout.v1 import (
    actions_pb2,
    actions_pb2_grpc,
    admin_pb2,
    admin_pb2_grpc,
    bundles_pb2,
    bundles_pb2_grpc,
    dispatch_pb2,
    dispatch_pb2_grpc,
)

log = logging.getLogger(__name__)


@dataclass
class ControlPlane:
    """A running server and what it owns."""

    server: aio.Server
    port: int
    redis: aioredis.Redis
    actions: ActionStore
    limits: LimitStore
    tokens: TokenStore
    health: health.aio.HealthServicer
    wakeup: Wakeup  # knows this server's open lease streams
    listing: Listing
    # The run page's address, in every Run message: set once the HTTP port is up (serve_pages).
    links: PageLinks
    collector: TenantCollector | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def run_page(self) -> RunPage:
        """The run page's handlers, for the HTTP port; called on this server's event loop."""
        return RunPage(self.listing, self.tokens, self.links, asyncio.get_running_loop(), ReportStore(self.redis))

    def serve_pages(self, base_url: str) -> None:
        """Runs' `url` points to the run page under `base_url` (http://host:port) from now on."""
        self.links.base = base_url.rstrip("/")

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop serving within about `grace` + STOP_MARGIN_SECONDS, whatever a task or an RPC does.

        An orchestrator kills a server that overstays its termination grace, so a stuck
        task or RPC handler must not hold the stop: it is named in the log (with where it
        waits) and left behind.
        """
        await self.health.enter_graceful_shutdown()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_MARGIN_SECONDS)
            for task in stuck:
                log.error("server task %s ignored its cancel for %.0f s; stopping without it:\n%s",
                          task.get_name(), STOP_MARGIN_SECONDS, _stack(task))  # fmt: skip
        try:
            await asyncio.wait_for(self.server.stop(grace), (grace or 0) + STOP_MARGIN_SECONDS)
        except TimeoutError:
            running = "\n".join(_stack(t) for t in asyncio.all_tasks() if t is not asyncio.current_task())
            log.error("the gRPC server had not stopped %.0f s after its grace; tasks still running:\n%s",
                      STOP_MARGIN_SECONDS, running)  # fmt: skip
        # stop() cancels the RPCs still running but does not wait for them to
        # unwind; one that hands its Redis connection back after the pool is
        # closed would leave that connection open. Let them finish first.
        await asyncio.sleep(0.1)
        await self.redis.aclose()
        if self.collector is not None:
            REGISTRY.unregister(self.collector)
            self.collector.close()


# How long past its grace a stopping server waits for its own tasks and RPCs.
STOP_MARGIN_SECONDS = 5.0


def _stack(task: asyncio.Task[Any]) -> str:
    out = io.StringIO()
    task.print_stack(limit=12, file=out)
    return out.getvalue()


# Every Redis timeout is set here, never left to redis-py's defaults, which changed
# between majors (the asyncio client's socket timeout went from none to 5 s).
# The socket timeout bounds how long any single reply may take, so it must outlast
# the longest blocking command we issue (the watch's XREAD BLOCK) with margin for a
# busy Redis; it also bounds how long an RPC waits on a Redis that stopped
# answering, so fail-closed stays within seconds.
REDIS_CONNECT_TIMEOUT_SECONDS = 2.0
REDIS_SOCKET_TIMEOUT_SECONDS = WATCH_BLOCK_MS / 1000 + 3.0
# Connections to one Redis: each command in flight holds one, and a busy server has hundreds in
# flight (every watch's read, every RPC's scripts). The pool's default changed between majors too
# (redis-py 8 fails the 101st command at once); past this many, a command waits for a free one.
REDIS_MAX_CONNECTIONS = 512


def connect_redis(url: str) -> aioredis.Redis:
    return redis_connect.connect_async(
        url,
        connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        max_connections=REDIS_MAX_CONNECTIONS,
    )


async def create_server(settings: Settings) -> ControlPlane:
    key = signing_key.load(settings.signing_key_file)
    redis = connect_redis(settings.redis_url)
    scripts = timed(Scripts.register(redis))
    limits = LimitStore(redis, scripts, settings.limits)
    actions = ActionStore(
        redis,
        scripts,
        limits,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
    )
    tokens = TokenStore(redis, key)
    legacy_tokens_moved = await _move_legacy_tokens(tokens)
    wakeup = Wakeup(actions)
    listing = Listing(redis)
    links = PageLinks(settings.page_url)

    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        # gRPC sets SO_REUSEPORT by default: a second server on a busy port would
        # start too and the kernel would split calls between two control planes.
        ("grpc.so_reuseport", 0),
    ]
    server = aio.server(interceptors=[MetricsInterceptor(), AuthInterceptor(tokens)], options=options)
    bundles = BundleStore(redis)
    actions_pb2_grpc.add_ActionServiceServicer_to_server(
        ActionService(
            settings, actions, limits, tokens, bundles, listing, links, TraceStore(redis), ReportStore(redis)
        ),
        server,
    )
    bundles_pb2_grpc.add_BundleServiceServicer_to_server(BundleService(bundles, limits), server)
    dispatch_pb2_grpc.add_DispatchServiceServicer_to_server(DispatchService(actions, limits, tokens, wakeup), server)
    metrics.cap_tenant_labels(settings.metrics_max_tenants)
    audit = AuditLog(redis)
    requests = RequestStore(redis, limits)
    tenants = TenantStore(redis, actions, limits, tokens)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminService(actions, limits, tokens, tenants, requests, audit), server
    )
    admin_pb2_grpc.add_QuotaServiceServicer_to_server(QuotaService(actions, limits, requests, audit), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    services = [
        actions_pb2.DESCRIPTOR.services_by_name["ActionService"].full_name,
        dispatch_pb2.DESCRIPTOR.services_by_name["DispatchService"].full_name,
        bundles_pb2.DESCRIPTOR.services_by_name["BundleService"].full_name,
        admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
        admin_pb2.DESCRIPTOR.services_by_name["QuotaService"].full_name,
    ]
    reflection.enable_server_reflection([*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    try:
        if settings.tls_cert:
            port = server.add_secure_port(settings.listen, _credentials(settings))
        else:
            port = server.add_insecure_port(settings.listen)
    except RuntimeError:
        await redis.aclose()
        raise StartupError(
            f"cannot listen on {settings.listen}: the address is in use or not local; "
            "choose another with --listen (port 0 picks a free one)"
        ) from None
    await server.start()
    for name in ["", *services]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    plane = ControlPlane(server, port, redis, actions, limits, tokens, health_servicer, wakeup, listing, links)
    if settings.metrics_port >= 0:  # the per-tenant gauges, read from Redis when /metrics is scraped
        plane.collector = TenantCollector(
            settings.redis_url,
            settings.limits,
            settings.metrics_max_tenants,
            lambda: pools(wakeup.scopes()),
            cache_seconds=settings.metrics_cache_seconds,
        )
        REGISTRY.register(plane.collector)
    plane._tasks.append(
        asyncio.create_task(_reap_forever(actions, limits, settings.reap_interval_seconds), name="reaper")
    )
    if not legacy_tokens_moved:
        plane._tasks.append(asyncio.create_task(_move_legacy_tokens_forever(tokens), name="legacy-tokens"))
    # Wakes from every server (admissions, requeues, freed slots) reach this server's lease streams.
    plane._tasks.append(asyncio.create_task(wakeup.listen(), name="wakeup"))
    return plane


async def _move_legacy_tokens(tokens: TokenStore) -> bool:
    """Tokens an older server kept outside the {_tokens} hash tag move before this one serves; false if
    Redis could not be reached (a server may start before its store; the move is then retried)."""
    try:
        if moved := await tokens.move_legacy_keys():
            log.info("moved %d tokens to the {_tokens} keys", moved)
        return True
    except StoreError as exc:
        log.warning("cannot move legacy token keys yet: %s", exc)
        return False


async def _move_legacy_tokens_forever(tokens: TokenStore) -> None:
    moved = False
    while not moved:
        await asyncio.sleep(5)  # a store that was down at start: try again until it answers
        moved = await _move_legacy_tokens(tokens)


def _credentials(settings: Settings) -> grpc.ServerCredentials:
    try:
        key = Path(settings.tls_key).read_bytes()
        cert = Path(settings.tls_cert).read_bytes()
        client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    except OSError as exc:
        raise StartupError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def _reap_forever(actions: ActionStore, limits: LimitStore, interval: float) -> None:
    while True:
        # A cancel swallowed inside a Redis call (see raise_if_cancelling) must still end the loop.
        raise_if_cancelling()
        await asyncio.sleep(interval)
        try:
            if restored := await limits.expire_due():
                log.info("restored %d limits whose temporary values expired", restored)
            for tenant in await actions.tenants():
                requeued, failed = await actions.reap(tenant)
                if requeued or failed:
                    metrics.LEASES_RECLAIMED.labels(outcome="requeued").inc(requeued)
                    metrics.LEASES_RECLAIMED.labels(outcome="failed").inc(failed)
                    event_log.leases_reclaimed(tenant, requeued, failed)
                # Finish admissions, closings a dead server left half done, and drop runs past retention.
                await actions.finish_committed_batches(tenant)
                await actions.close_finished_runs(tenant)
                await actions.continue_aborts(tenant)  # and the AbortAction walks a dead server left
                await actions.drop_expired_runs(tenant)
        except StoreError:
            actions.lost_contact()  # nobody could renew a lease meanwhile: reaping waits once Redis is back
