"""`fanout up`: the whole control plane in one process tree.

A private Redis (append-only, under the data directory) unless a Redis URL
is given, the gRPC server, and one dispatcher with the local process
backend (or, with --backend docker, containers on the local Docker
engine). It mints the bootstrap tokens and writes the config file clients
read, so `fanout.init_from_config()` and the CLI work at once.

The data directory holds secrets (tokens, the Redis password, the key that
signs action tokens): it is 0700 and every file in it is created 0600. Run
as root, actions run under their tenants' own uids (dispatch/sandbox.py)
and must pass through it to their folders: then it is 0711, passable but
not listable, and its files stay 0600, its other folders 0700.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fanout import config as client_config
from fanout.dispatch import backends
from fanout.dispatch.dispatcher import DEFAULT_CAPACITY, Dispatcher
from fanout.dispatch.sandbox import Sandbox
from fanout.private_files import private_dir, write_private
from fanout.server import signing_key
from fanout.server.app import ControlPlane, create_server
from fanout.server.metrics_http import MetricsServer
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.server.signals import until_signalled

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
ADMIN_TOKEN_FILE = "admin-token"
SIGNING_KEY_FILE = "signing-key"


@dataclass
class UpOptions:
    data_dir: Path
    listen: str = "127.0.0.1:50051"
    metrics_port: int = 0
    redis_url: str = ""
    capacity: int = DEFAULT_CAPACITY
    command: list[str] | None = None
    backend: str = "process"  # or "docker", "kubernetes" (see fanout.dispatch.backends)
    image: str = ""  # the container backends' default worker image
    namespace: str = ""  # the kubernetes backend's: where pods go ({tenant} for one namespace each)
    worker_host: str = ""  # the kubernetes backend's: the address its pods dial back to
    trust_tenants: bool = False
    tenant_uids: bool = True


async def up(options: UpOptions) -> int:
    data_dir = private_dir(options.data_dir.resolve())
    redis_proc = None
    redis_url = options.redis_url
    if not redis_url:
        redis_proc = RedisProcess(data_dir / "redis").start()
        redis_url = redis_proc.url
    plane: ControlPlane | None = None
    metrics = None
    dispatcher = None
    dispatcher_task = None
    signalled: asyncio.Future[None] | None = None
    try:
        settings = Settings.from_env(redis_url=redis_url, listen=options.listen, metrics_port=options.metrics_port)
        client_config.forget_secret_variables()  # read once; the actions we start must not inherit them
        if not settings.signing_key_file:  # servers sharing an outside Redis set FANOUT_SIGNING_KEY_FILE
            settings = replace(settings, signing_key_file=str(data_dir / SIGNING_KEY_FILE))
        signing_key.create_if_missing(Path(settings.signing_key_file))
        plane = await create_server(settings)
        metrics = MetricsServer(settings.metrics_port, pages=plane.run_page()).start()
        if not settings.page_url:
            plane.serve_pages(metrics.base_url)
        host = settings.listen.rsplit(":", 1)[0]
        endpoint = f"{host}:{plane.port}"
        config_path = await _bootstrap(plane, data_dir, endpoint)
        dispatcher_token = await plane.tokens.create("dispatcher")
        # Uids per tenant are the process backend's: a container runs as its image's non-root user.
        tenant_uids = options.tenant_uids and options.backend == "process"
        sandbox = Sandbox.for_dispatcher(data_dir, options.trust_tenants, tenant_uids)
        if sandbox.users is not None:
            # Actions under their tenants' uids must reach their folders and homes in here: passable
            # (0711), not listable, and every secret in it stays 0600 (see the module doc).
            data_dir.chmod(0o711)
        chosen = backends.choose(
            options.backend,
            data_dir / "actions",
            options.image,
            settings.max_payload_bytes,
            sandbox=sandbox,
            namespace=options.namespace,
            worker_host=options.worker_host,
        )
        dispatcher = Dispatcher(
            client_config.ClientConfig(endpoint=endpoint, token=dispatcher_token),
            chosen.backend,
            capacity=options.capacity,
            worker_logs=data_dir / "workers",
            new_worker=chosen.new_worker,
            sandbox=sandbox,
        )
        dispatcher_task = asyncio.create_task(dispatcher.run())
        signalled = asyncio.ensure_future(until_signalled())
        await asyncio.sleep(0)  # its handlers are in place before anyone is told we are ready
        pages = f" · run pages {plane.links.run('NAME')}" if plane.links.base else ""
        print(
            f"fanout is ready at {endpoint} · metrics {metrics.url}{pages} · "
            f"config {config_path} · admin token in {data_dir / ADMIN_TOKEN_FILE}",
            flush=True,
        )
        if options.command:
            return await _run_command(options.command, config_path, signalled)
        await signalled
        return 0
    finally:
        if signalled is not None:
            signalled.cancel()
        if dispatcher is not None and dispatcher_task is not None:
            dispatcher.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(dispatcher_task, 15)
        if plane is not None:
            await plane.stop(grace=2)
        if metrics is not None:
            metrics.stop()
        if redis_proc is not None:
            redis_proc.stop()


async def _bootstrap(plane: ControlPlane, data_dir: Path, endpoint: str) -> Path:
    """Mint an admin token and the default tenant's token; write the client config."""
    admin_token = await plane.tokens.create("admin")
    write_private(data_dir / ADMIN_TOKEN_FILE, admin_token + "\n")
    await plane.actions.register_tenant(DEFAULT_TENANT)
    tenant_token = await plane.tokens.create("tenant", DEFAULT_TENANT)
    path = data_dir / client_config.CONFIG_NAME
    client_config.write(path, endpoint=endpoint, token=tenant_token, admin_token_file=ADMIN_TOKEN_FILE)
    return path


async def _run_command(command: list[str], config_path: Path, signalled: asyncio.Future[Any]) -> int:
    env = {**os.environ, "FANOUT_CONFIG": str(config_path)}
    # The config file is the one source here; stale variables would override it.
    env.pop("FANOUT_ENDPOINT", None)
    env.pop("FANOUT_TOKEN", None)
    try:
        proc = await asyncio.create_subprocess_exec(*command, env=env)
    except OSError as exc:
        print(f"fanout up: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    waiter: asyncio.Future[Any] = asyncio.ensure_future(proc.wait())
    await asyncio.wait({waiter, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done():
        proc.terminate()
        await waiter
        return 130
    return int(waiter.result())
