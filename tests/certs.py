"""Certificates for the TLS tests, made with openssl: a CA, a server and a client."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def issue(cwd: Path, name: str, subject: str, extensions: str) -> None:
    """A key and a certificate for `name`, signed by the CA in `cwd`."""
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", subject,
            "-out", f"{name}.csr", cwd=cwd)  # fmt: skip
    (cwd / f"{name}.ext").write_text(extensions)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=cwd)  # fmt: skip


def make_certs(d: Path) -> Path:
    """In `d`: a CA (ca.pem), a server certificate for 127.0.0.1 and localhost, a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=fanout test CA", cwd=d)  # fmt: skip
    issue(d, "server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    issue(d, "client", "/CN=client", "extendedKeyUsage=clientAuth\n")
    return d
