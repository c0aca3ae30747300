"""`fanout server`: one stateless gRPC server with its metrics endpoint."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from fanout.private_files import private_dir, write_private
from fanout.server import signing_key
from fanout.server.app import create_server
from fanout.server.metrics_http import MetricsServer
from fanout.server.settings import Settings
from fanout.server.signals import until_signalled

log = logging.getLogger(__name__)


async def serve(settings: Settings, admin_token_file: Path | None = None) -> int:
    if settings.signing_key_file and signing_key.create_if_missing(Path(settings.signing_key_file)):
        # A warning, not a print: it goes out in the chosen log format (--log-format json).
        log.warning(
            "generated a new key for action tokens in %s; EVERY server of this deployment must use this same key file",
            settings.signing_key_file,
        )
    plane = await create_server(settings)
    metrics = MetricsServer(settings.metrics_port, host="0.0.0.0", pages=plane.run_page()).start()
    if metrics.base_url and not settings.page_url:
        # 0.0.0.0 is where we listen, not an address a browser can open: name this host instead.
        plane.serve_pages(f"http://{socket.getfqdn()}:{metrics.port}")
    try:
        if admin_token_file is not None and not admin_token_file.exists():
            private_dir(admin_token_file.parent, tighten=False)
            write_private(admin_token_file, await plane.tokens.create("admin") + "\n")
            print(f"wrote a new admin token to {admin_token_file}", flush=True)
        host = settings.listen.rsplit(":", 1)[0]
        pages = f" · run pages {plane.links.run('NAME')}" if plane.links.base else ""
        print(f"fanout server listening on {host}:{plane.port} · metrics {metrics.url}{pages}", flush=True)
        await until_signalled()
        return 0
    finally:
        await plane.stop(grace=5)
        metrics.stop()
