"""The control plane's HTTP port: /metrics for Prometheus and, with pages, the run page.

A small threaded HTTP server; the run page's JSON endpoints run their Redis reads on the
control plane's event loop (the Redis client belongs to it) and wait for the answer.
"""

from __future__ import annotations

import logging
from http.server import ThreadingHTTPServer
from threading import Thread
from typing import Any

from prometheus_client.exposition import MetricsHandler

from fanout.server.run_page import RunPage

log = logging.getLogger(__name__)


class MetricsServer:
    def __init__(self, port: int, host: str = "127.0.0.1", pages: RunPage | None = None) -> None:
        self._server: ThreadingHTTPServer | None = None
        self.host = host
        self.port = port
        self._pages = pages

    def start(self) -> MetricsServer:
        if self.port >= 0:
            handler = type("Handler", (_Handler,), {"pages": self._pages})
            self._server = ThreadingHTTPServer((self.host, self.port), handler)
            self._server.daemon_threads = True
            self.port = self._server.server_port
            Thread(target=self._server.serve_forever, name="http", daemon=True).start()
        return self

    @property
    def base_url(self) -> str:
        """http://host:port of this server; "" when it is off."""
        return f"http://{self.host}:{self.port}" if self._server else ""

    @property
    def url(self) -> str:
        return f"{self.base_url}/metrics" if self._server else "(metrics off)"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(MetricsHandler):
    """Prometheus's own handler (every other path answers metrics, as before), with the run pages beside it."""

    pages: RunPage | None = None

    def do_GET(self) -> None:
        if self.pages is not None and self.path.startswith(("/runs/", "/api/")):
            status, content_type, body, headers = self.pages.answer(self.path, self.headers.get("Authorization", ""))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        # Paths carry no token (it travels in a header); access lines are noise above DEBUG.
        log.debug("http %s " + format, self.address_string(), *args)
