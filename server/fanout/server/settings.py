"""Typed server settings, read from FANOUT_* environment variables in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from fanout.quota.limits import Limits
from fanout.server.errors import StartupError

ENV_PREFIX = "FANOUT_"


class SettingsError(StartupError, ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    listen: str = "127.0.0.1:50051"
    # Prometheus metrics HTTP port; 0 picks a free one, -1 turns metrics off.
    metrics_port: int = 9464
    # Where users open run pages (http[s]://host:port, behind any proxy): runs' `url` starts with it.
    # Empty: this server's own HTTP port (the metrics one), as it is reached from here.
    page_url: str = ""
    # Tenants that get their own label value in metrics; later ones are counted as "other".
    metrics_max_tenants: int = 200
    # A scrape within this many seconds of the last one is served the same per-tenant gauges, so a
    # Prometheus pair (or any burst of scrapes) costs Redis one walk of the tenants; 0 reads every time.
    metrics_cache_seconds: float = 5.0
    max_fanout: int = Limits.max_fanout
    max_concurrency: int = Limits.max_concurrency
    max_queued: int = Limits.max_queued
    max_payload_bytes: int = Limits.max_payload_bytes
    max_stored_bytes: int = Limits.max_stored_bytes
    # Biggest SubmitBatch, in actions, and biggest gRPC message, in bytes.
    max_batch: int = 100_000
    max_message_bytes: int = 256 << 20
    # Biggest SubmitBatch in bytes (its serialized actions): what one call may
    # add to Redis, so a few calls cannot fill it.
    max_batch_bytes: int = 64 << 20
    # Leases not renewed for this long are reclaimed and the action queued
    # again; an action that loses max_attempts leases fails (its own retries
    # are counted apart).
    lease_seconds: float = 15.0
    max_attempts: int = 3
    # A finished run's state is kept this long, then the sweeper drops it: the
    # default of the per-tenant retention_seconds limit.
    run_retention_seconds: int = 7 * 24 * 3600
    reap_interval_seconds: float = 1.0
    tls_cert: str = ""
    tls_key: str = ""
    # With a client CA, clients must present certificates (mutual TLS).
    tls_client_ca: str = ""
    # The key that signs action tokens (0600, shared by every server of a
    # deployment); kept out of Redis so that reaching Redis cannot mint tokens.
    signing_key_file: str = ""

    @property
    def limits(self) -> Limits:
        return Limits(
            self.max_fanout,
            self.max_concurrency,
            self.max_queued,
            self.max_payload_bytes,
            self.max_stored_bytes,
            self.run_retention_seconds,
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then FANOUT_<FIELD> variables, then explicit overrides (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = replace(cls(), **values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in (
            "max_fanout",
            "max_concurrency",
            "max_queued",
            "max_payload_bytes",
            "max_stored_bytes",
            "max_batch",
            "max_batch_bytes",
            "max_attempts",
            "run_retention_seconds",
            "metrics_max_tenants",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be at least 1, got {getattr(self, name)}")
        if self.metrics_cache_seconds < 0:
            raise SettingsError(
                f"{ENV_PREFIX}METRICS_CACHE_SECONDS must be 0 or more, got {self.metrics_cache_seconds}"
            )
        if self.lease_seconds <= 0:
            raise SettingsError(f"{ENV_PREFIX}LEASE_SECONDS must be positive, got {self.lease_seconds}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("TLS needs both a certificate and a key (FANOUT_TLS_CERT and FANOUT_TLS_KEY)")
        if self.tls_client_ca and not self.tls_cert:
            raise SettingsError("FANOUT_TLS_CLIENT_CA (mutual TLS) needs FANOUT_TLS_CERT and FANOUT_TLS_KEY too")
        if self.page_url and not self.page_url.startswith(("http://", "https://")):
            raise SettingsError(f"FANOUT_PAGE_URL must start with http:// or https://, got {self.page_url!r}")
        if ":" not in self.listen:
            raise SettingsError(f"FANOUT_LISTEN must be host:port, got {self.listen!r}")


def _parse(name: str, type_name: str, raw: str) -> object:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be a {type_name}, got {raw!r}") from None
    return raw
