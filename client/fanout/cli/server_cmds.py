"""`fanout up`, `fanout server`, `fanout dispatcher`: running the control plane."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from fanout import config as client_config
from fanout import gc_tuning, tracing
from fanout.cli.token_args import add_token_args
from fanout.dispatch.dispatcher import DEFAULT_CAPACITY
from fanout.errors import ConfigError

TRUST_HELP = (
    "let tenants choose an action's `command` and working directory (`workdir`); without it an action with a "
    "command fails as UntrustedSpec and every action runs in its private folder. Only for tenants you trust "
    "with this machine"
)


UIDS_HELP = (
    "run as root, do not give each tenant's actions a uid of their own: they run as root, and can read "
    "everything the dispatcher can (development only)"
)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser(
        "up",
        help="run the whole control plane on its embedded default",
        description="Start a private Redis (append-only, under --data-dir), the gRPC server and a dispatcher "
        "with the local process backend. Writes <data-dir>/config.yaml for clients. With a command after "
        "'--', runs it against the control plane, then stops everything and exits with its code.",
    )
    up.add_argument("--data-dir", type=Path, default=Path(".fanout"), help="state and config (default: ./.fanout)")
    up.add_argument(
        "--listen", default="127.0.0.1:50051", help="gRPC address (default: 127.0.0.1:50051; port 0 picks one)"
    )
    up.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (default: a free one; -1: off)")
    up.add_argument(
        "--redis-url", default="", help="use this Redis instead of starting a private one (FANOUT_REDIS_URL)"
    )
    up.add_argument(
        "--capacity",
        type=int,
        default=DEFAULT_CAPACITY,
        help=f"actions the dispatcher holds at once, running or queued for a worker (default: {DEFAULT_CAPACITY}); "
        "action processes are bounded apart",
    )
    _add_backend_args(up)
    up.add_argument("--trust-tenants", action="store_true", help=TRUST_HELP)
    up.add_argument("--no-tenant-uids", dest="tenant_uids", action="store_false", help=UIDS_HELP)
    up.add_argument("command", nargs=argparse.REMAINDER, help="optional: -- COMMAND [ARGS...] to run, then stop")
    up.set_defaults(handler=cmd_up)

    server = sub.add_parser(
        "server",
        help="run one gRPC server (stateless; run many against one Redis)",
        description="Settings come from FANOUT_* variables (FANOUT_REDIS_URL, FANOUT_LISTEN, FANOUT_METRICS_PORT, "
        "FANOUT_MAX_FANOUT, FANOUT_TLS_CERT, ...); flags override them.",
    )
    server.add_argument("--listen", help="gRPC address, host:port")
    server.add_argument("--redis-url", help="Redis URL (FANOUT_REDIS_URL)")
    server.add_argument("--metrics-port", type=int, help="Prometheus port (FANOUT_METRICS_PORT)")
    server.add_argument("--tls-cert", help="server certificate (PEM)")
    server.add_argument("--tls-key", help="server private key (PEM)")
    server.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mutual TLS)")
    server.add_argument(
        "--admin-token-file", type=Path, help="if this file does not exist, mint an admin token into it"
    )
    server.add_argument(
        "--signing-key-file",
        help="key that signs action tokens, shared by every server (FANOUT_SIGNING_KEY_FILE); "
        "created with a new key if missing",
    )
    server.set_defaults(handler=cmd_server)

    disp = sub.add_parser(
        "dispatcher",
        help="run a dispatcher (local processes or Docker containers)",
        description="Leases actions from the control plane over gRPC (FANOUT_ENDPOINT; a dispatcher token from "
        "--token-file or FANOUT_TOKEN, never a flag) and runs each as a local process (--backend process: in a "
        "private folder, with a scrubbed environment, and, run as root, under a uid of its tenant's own) or in a "
        "container of the local Docker engine (--backend docker). A BYOC dispatcher runs in the tenant's cluster "
        "with a token scoped to that tenant and TLS to the control plane.",
    )
    disp.add_argument("--endpoint", help="control plane address (FANOUT_ENDPOINT)")
    add_token_args(disp, "dispatcher token")
    disp.add_argument("--tls-ca", help="CA certificate (PEM) that signed the server's certificate (FANOUT_TLS_CA)")
    disp.add_argument("--tls-cert", help="client certificate (PEM) for mutual TLS (FANOUT_TLS_CERT)")
    disp.add_argument("--tls-key", help="client private key (PEM) for mutual TLS (FANOUT_TLS_KEY)")
    disp.add_argument("--trust-tenants", action="store_true", help=TRUST_HELP)
    disp.add_argument("--no-tenant-uids", dest="tenant_uids", action="store_false", help=UIDS_HELP)
    disp.add_argument(
        "--capacity",
        type=int,
        default=DEFAULT_CAPACITY,
        help=f"actions held at once: queued for a worker, running, or ended with the report of their end not "
        f"answered yet (default: {DEFAULT_CAPACITY})",
    )
    disp.add_argument("--work-dir", type=Path, default=Path(".fanout/actions"), help="per-action scratch directories")
    disp.add_argument("--action-endpoint", default="", help="address actions use to reach the control plane")
    _add_backend_args(disp)
    disp.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("FANOUT_METRICS_PORT") or -1),
        help="Prometheus port (FANOUT_METRICS_PORT; 0 picks a free one, printed; default -1: off)",
    )
    disp.set_defaults(handler=cmd_dispatcher)


def _add_backend_args(parser: argparse.ArgumentParser) -> None:
    from fanout.dispatch.backends import BACKENDS

    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="process",
        help="where actions run: local processes (default); containers of the Docker engine that DOCKER_HOST "
        "or the local socket names (host networking, dialling back on 127.0.0.1); or pods of the Kubernetes "
        "cluster this dispatcher runs in, or of KUBECONFIG (RBAC: deploy/kubernetes/base/dispatcher/rbac.yaml)",
    )
    parser.add_argument(
        "--image",
        default="",
        help="docker and kubernetes backends: the worker image of tasks whose TaskEnvironment names none "
        "(default: fanout-runtime:dev, built by scripts/docker_engine.sh)",
    )
    parser.add_argument(
        "--namespace",
        default="",
        help="kubernetes backend: the namespace of the action pods; {tenant} stands for the tenant, one "
        "namespace each, made when first needed (default: fanout-{tenant})",
    )
    parser.add_argument(
        "--worker-host",
        default="",
        help="kubernetes backend: the address of this dispatcher that its pods dial back to "
        "(default: $POD_IP, set from the downward API in deploy/; else 127.0.0.1)",
    )


def _redis_url_flag(url: str | None) -> str | None:
    if url and urlparse(url).password:
        raise ConfigError(
            "--redis-url carries a password, which `ps` shows to every local user: set FANOUT_REDIS_URL instead"
        )
    return url


def cmd_up(args: argparse.Namespace) -> int:
    from fanout.server.embedded import UpOptions, up

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    redis_url = _redis_url_flag(args.redis_url) or os.environ.get("FANOUT_REDIS_URL", "")
    options = UpOptions(
        args.data_dir,
        args.listen,
        args.metrics_port,
        redis_url,
        args.capacity,
        command or None,
        backend=args.backend,
        image=args.image,
        namespace=args.namespace,
        worker_host=args.worker_host,
        trust_tenants=args.trust_tenants,
        tenant_uids=args.tenant_uids,
    )
    tracing.setup("fanout-up")
    gc_tuning.tune_for_throughput()
    return asyncio.run(up(options))


def cmd_server(args: argparse.Namespace) -> int:
    from fanout.server.serve import serve
    from fanout.server.settings import Settings

    settings = Settings.from_env(
        listen=args.listen,
        redis_url=_redis_url_flag(args.redis_url),
        metrics_port=args.metrics_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        signing_key_file=args.signing_key_file,
    )
    tracing.setup("fanout-server")
    gc_tuning.tune_for_throughput()
    return asyncio.run(serve(settings, args.admin_token_file))


def cmd_dispatcher(args: argparse.Namespace) -> int:
    from fanout.dispatch import backends
    from fanout.dispatch.dispatcher import Dispatcher
    from fanout.dispatch.sandbox import Sandbox
    from fanout.dispatch.worker_env import tls_variables
    from fanout.server.metrics_http import MetricsServer
    from fanout.server.signals import until_signalled

    tls = {"tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    cfg = client_config.load(endpoint=args.endpoint, token=args.token, **tls).require()
    client_config.forget_secret_variables()  # the token stays in memory; the actions we start never see it
    work_dir = args.work_dir.resolve()
    # The tenants' uids and homes sit beside the work folders, outside them (those are walked as actions).
    # Uids per tenant are the process backend's: a container runs as its image's non-root user.
    tenant_uids = args.tenant_uids and args.backend == "process"
    sandbox = Sandbox.for_dispatcher(work_dir.parent, args.trust_tenants, tenant_uids)
    chosen = backends.choose(
        args.backend,
        work_dir,
        args.image,
        sandbox=sandbox,
        tls=tls_variables(cfg),
        namespace=args.namespace,
        worker_host=args.worker_host,
    )
    dispatcher = Dispatcher(
        cfg,
        chosen.backend,
        args.capacity,
        args.action_endpoint,
        worker_logs=work_dir.parent / "workers",
        new_worker=chosen.new_worker,
        sandbox=sandbox,
    )

    async def main() -> int:
        metrics = MetricsServer(args.metrics_port, host="0.0.0.0").start()
        print(f"fanout dispatcher {dispatcher.id} · metrics {metrics.url}", flush=True)
        task = asyncio.create_task(dispatcher.run())
        signalled = asyncio.create_task(until_signalled())
        await asyncio.wait({task, signalled}, return_when=asyncio.FIRST_COMPLETED)
        dispatcher.stop()
        await task
        signalled.cancel()
        metrics.stop()
        return 0

    logging.getLogger(__name__).info("dispatcher %s serving %s", dispatcher.id, cfg.endpoint)
    tracing.setup("fanout-dispatcher")
    gc_tuning.tune_for_throughput()
    return asyncio.run(main())
