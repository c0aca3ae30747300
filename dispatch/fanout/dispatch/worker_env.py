"""The environment a worker starts with: a few essentials, the spec's env and the control plane's address.

Never the dispatcher's token, never FANOUT_REDIS_URL: a worker (reusable or
one-shot) holds only the tokens of its actions. The fork server starts with
the same essentials (base_env), so its forked workers inherit nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fanout.config import ClientConfig
from fanout.v1 import actions_pb2 as pb

# What a worker inherits from the dispatcher's environment: enough to run
# Python and find the installed packages, nothing that grants anything.
INHERITED_VARIABLES = (
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
    "FANOUT_BUNDLE_CACHE",  # where workers unpack code bundles (fanout.bundles.unpack)
)  # fmt: skip
TLS_VARIABLES = ("FANOUT_TLS_CA", "FANOUT_TLS_CERT", "FANOUT_TLS_KEY")
# Tracing (fanout.tracing): whether it is on and where spans go. Never OTEL_EXPORTER_OTLP_HEADERS,
# which may hold the platform's collector credentials.
TRACING_VARIABLES = ("FANOUT_OTEL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def base_env() -> dict[str, str]:
    return {name: os.environ[name] for name in (*INHERITED_VARIABLES, *TRACING_VARIABLES) if name in os.environ}


def worker_env(spec: pb.ActionSpec, endpoint: str, tls: Mapping[str, str]) -> dict[str, str]:
    """`tls`: FANOUT_TLS_* variables (file paths) for the worker's channel, empty values left out."""
    env = base_env()
    env.update(spec.env)
    env["FANOUT_ENDPOINT"] = endpoint
    env["FANOUT_CONFIG"] = os.devnull  # no config file: the actions' tokens come in their leases
    env.update({name: value for name, value in tls.items() if value})
    return env


def tls_variables(config: ClientConfig) -> dict[str, str]:
    """The dispatcher's TLS settings (file paths, whether from flags, environment or config) for its workers."""
    values = (config.tls_ca, config.tls_cert, config.tls_key)
    return {name: value for name, value in zip(TLS_VARIABLES, values, strict=True) if value}
