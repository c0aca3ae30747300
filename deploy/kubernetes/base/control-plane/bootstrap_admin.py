"""Mint the bootstrap admin token once and keep it in the Secret fanout-admin-token.

Run by the Job in bootstrap.yaml with the server's settings (FANOUT_REDIS_URL,
FANOUT_SIGNING_KEY_FILE). Only the token's hash goes to Redis, as with
`fanout server --admin-token-file`; the token itself goes to the Secret through
the Kubernetes API, with the Job's service account. If the Secret already
exists, nothing happens. A failure after minting leaves an admin token nobody
knows (harmless: revoke it with `fanout admin token revoke` once listed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from fanout.quota.tokens import TokenStore
from fanout.server import signing_key
from fanout.server.app import connect_redis
from fanout.server.settings import Settings

API = "https://kubernetes.default.svc"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SECRET = "fanout-admin-token"


def kubernetes(method: str, path: str, body: Mapping[str, object] | None = None) -> None:
    request = urllib.request.Request(
        API + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": "Bearer " + (SERVICE_ACCOUNT / "token").read_text().strip(),
            "Content-Type": "application/json",
        },
    )
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    with urllib.request.urlopen(request, context=context, timeout=10):
        pass


def secret_exists(namespace: str) -> bool:
    try:
        kubernetes("GET", f"/api/v1/namespaces/{namespace}/secrets/{SECRET}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


async def mint(settings: Settings) -> str:
    redis = connect_redis(settings.redis_url)
    try:
        return await TokenStore(redis, signing_key.load(settings.signing_key_file)).create("admin")
    finally:
        await redis.aclose()


def main() -> int:
    namespace = os.environ["POD_NAMESPACE"]
    if secret_exists(namespace):
        print(f"secret {SECRET} exists: the admin token was minted before; nothing to do")
        return 0
    token = asyncio.run(mint(Settings.from_env()))
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "labels": {"app.kubernetes.io/part-of": "fanout"}},
        "type": "Opaque",
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    kubernetes("POST", f"/api/v1/namespaces/{namespace}/secrets", secret)
    print(f"minted the bootstrap admin token into secret {SECRET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
