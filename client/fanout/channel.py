"""The one channel factory: TLS, keepalive, message size and retries are set here only."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from grpc import aio

from fanout.config import ClientConfig

MAX_MESSAGE_BYTES = 256 << 20

# Reads are safe to retry on UNAVAILABLE; writes retry in the SDK, where
# deterministic names make a resubmission harmless.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "fanout.v1.ActionService", "method": "GetRun"},
                    {"service": "fanout.v1.ActionService", "method": "GetAction"},
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

# Keepalive finds a dead connection within 40 s and never cuts a healthy one:
# the server (server/app.py) accepts pings every 10 s or more, with or without
# calls, so 30 s is never "too many pings" (which would GOAWAY every call on the
# connection). A quiet watch also carries a heartbeat after each empty blocking
# read on the server, so long streams always have data moving.
_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", _SERVICE_CONFIG),
]


def _credentials(config: ClientConfig) -> grpc.ChannelCredentials:
    def read(path: str) -> bytes | None:
        if path.lstrip().startswith("-----BEGIN"):  # the PEM itself (a container's worker has no files)
            return path.encode()
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(read(config.tls_ca), read(config.tls_key), read(config.tls_cert))


def sync_channel(config: ClientConfig) -> grpc.Channel:
    if config.tls:
        return grpc.secure_channel(config.endpoint, _credentials(config), options=_OPTIONS)
    return grpc.insecure_channel(config.endpoint, options=_OPTIONS)


def async_channel(config: ClientConfig) -> aio.Channel:
    if config.tls:
        return aio.secure_channel(config.endpoint, _credentials(config), options=_OPTIONS)
    return aio.insecure_channel(config.endpoint, options=_OPTIONS)
