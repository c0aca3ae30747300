"""`fanout server`: one stateless gRPC server with its metrics endpoint."""

from __future__ import annotations

import logging
from pathlib import Path

from fanout.server.app import create_server
from fanout.server.metrics_http import MetricsServer
from fanout.server.settings import Settings
from fanout.server.signals import until_signalled

log = logging.getLogger(__name__)


async def serve(settings: Settings, admin_token_file: Path | None = None) -> int:
    plane = await create_server(settings)
    metrics = MetricsServer(settings.metrics_port, host="0.0.0.0").start()
    try:
        if admin_token_file is not None and not admin_token_file.exists():
            admin_token_file.parent.mkdir(parents=True, exist_ok=True)
            admin_token_file.write_text(await plane.tokens.create("admin") + "\n")
            admin_token_file.chmod(0o600)
            print(f"wrote a new admin token to {admin_token_file}", flush=True)
        host = settings.listen.rsplit(":", 1)[0]
        print(f"fanout server listening on {host}:{plane.port} · metrics {metrics.url}", flush=True)
        await until_signalled()
        return 0
    finally:
        await plane.stop(grace=5)
        metrics.stop()
