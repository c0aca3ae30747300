"""Serve /metrics for Prometheus on its own port."""

from __future__ import annotations

from typing import Any

from prometheus_client import start_http_server


class MetricsServer:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._server: Any = None
        self.host = host
        self.port = port

    def start(self) -> MetricsServer:
        if self.port >= 0:
            self._server, _ = start_http_server(self.port, addr=self.host)
            self.port = self._server.server_port
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics" if self._server else "(metrics off)"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
