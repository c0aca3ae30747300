"""Where a client finds its endpoint and token.

Order, later wins: the config file ($FANOUT_CONFIG, else ./.fanout/config.yaml,
else ~/.fanout/config.yaml), then FANOUT_ENDPOINT / FANOUT_TOKEN, then explicit
arguments.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from fanout.errors import ConfigError
from fanout.private_files import private_dir, write_private

CONFIG_NAME = "config.yaml"
# Variables that carry secrets. Processes that start tasks (`fanout up`,
# `fanout dispatcher`) drop them from their environment once read, so that no
# task inherits them.
SECRET_VARIABLES = ("FANOUT_TOKEN", "FANOUT_REDIS_URL")


@dataclass(frozen=True)
class ClientConfig:
    endpoint: str = ""
    token: str = ""
    # TLS: a CA bundle turns TLS on; cert and key add a client certificate (mutual TLS). Each is a
    # file's path, or the PEM text itself (so FANOUT_TLS_CA can carry it into a container).
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # The admin token's file, written by `fanout up`; used by `fanout admin`.
    admin_token_file: str = ""
    source: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca)

    def require(self) -> ClientConfig:
        if not self.endpoint:
            raise ConfigError(
                "no endpoint: run `fanout up`, or set FANOUT_ENDPOINT, or pass endpoint= to fanout.init()"
            )
        if not self.token:
            raise ConfigError("no token: set FANOUT_TOKEN, or pass token= to fanout.init()")
        return self

    def admin_token(self) -> str:
        if not self.admin_token_file:
            return ""
        path = Path(self.admin_token_file)
        if not path.is_absolute() and self.source:
            path = Path(self.source).parent / path  # relative to the config file
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the admin token file {path}: {exc.strerror}") from None


def config_path(environ: dict[str, str] | os._Environ[str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    if env.get("FANOUT_CONFIG"):
        return Path(env["FANOUT_CONFIG"])
    for candidate in (Path.cwd() / ".fanout" / CONFIG_NAME, Path.home() / ".fanout" / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


def load(path: str | Path | None = None, **overrides: str | None) -> ClientConfig:
    config = ClientConfig()
    file = Path(path) if path else config_path()
    if file is not None:
        config = replace(_read_file(file), source=str(file))
    env = {
        "endpoint": os.environ.get("FANOUT_ENDPOINT"),
        "token": os.environ.get("FANOUT_TOKEN"),
        "tls_ca": os.environ.get("FANOUT_TLS_CA"),
        "tls_cert": os.environ.get("FANOUT_TLS_CERT"),
        "tls_key": os.environ.get("FANOUT_TLS_KEY"),
    }
    config = replace(config, **{k: v for k, v in env.items() if v})
    return replace(config, **{k: v for k, v in overrides.items() if v})


def _read_file(path: Path) -> ClientConfig:
    try:
        text = path.read_text()
        # An empty file (a worker's FANOUT_CONFIG=/dev/null) needs no YAML parser: a one-shot
        # worker reads one at each start.
        data: Any = (yaml.safe_load(text) if text.strip() else None) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (FANOUT_CONFIG)") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings")
    known = set(ClientConfig.__dataclass_fields__) - {"source"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown settings {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    return ClientConfig(**{k: str(v) for k, v in data.items()})


def read_token_file(path: str) -> str:
    """A token from a file, or from stdin for "-"."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    token = text.strip()
    if not token or len(token.split()) != 1:
        raise ConfigError(f"the token file {path} must hold one token")
    return token


def forget_secret_variables() -> None:
    for name in SECRET_VARIABLES:
        os.environ.pop(name, None)


def write(path: Path, **values: str) -> None:
    """Write a config file; it holds a token, so it is owner-only from its first byte."""
    private_dir(path.parent, tighten=False)
    write_private(path, yaml.safe_dump({k: v for k, v in values.items() if v}, sort_keys=False))
