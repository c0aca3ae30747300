"""API tokens: random, shown once, stored only as SHA-256 hashes.

Action tokens are different: they are minted for every leased action, so they
are HMACs over (tenant, run, action, attempt), costing no write per action.
The signing key comes from the server's key file and is never stored in
Redis: reaching Redis, or a dump of it, must not let anyone mint tokens.
They live exactly as long as their attempt: resolving one reads the action's
state (one HGET) and refuses it once that attempt is no longer the leased one
(finished, aborted, requeued or retried).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys, phases
from fanout.quota.failclosed import fail_closed

ROLES = ("tenant", "admin", "dispatcher", "action")
_ACTION_PREFIX = "fa1."


@dataclass(frozen=True)
class Principal:
    role: str
    # The tenant a tenant or action token belongs to; for dispatchers the
    # tenant they serve, "" meaning every tenant; "" for admins.
    tenant: str = ""
    run: str = ""
    action: str = ""

    @property
    def label(self) -> str:
        return f"{self.role}:{self.tenant}" if self.tenant else self.role


def _holds_lease(state: bytes, attempt: str) -> bool:
    """True while `attempt` is the current one and leased: past QUEUED, not yet terminal."""
    phase, current, _ = state.split(b":", 2)
    return current.decode() == attempt and phases.QUEUED < int(phase) and not phases.is_terminal(int(phase))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, redis: aioredis.Redis, signing_key: bytes) -> None:
        # Typed loosely: redis-py types replies as str | bytes; with decode_responses off they are bytes.
        self._redis: Any = redis
        self._signing_key = signing_key

    @fail_closed
    async def create(self, role: str, tenant: str = "") -> str:
        if role not in ("tenant", "admin", "dispatcher"):
            raise ValueError(f"cannot mint a {role!r} token here")
        token = f"fo_{role[0]}_{secrets.token_urlsafe(32)}"
        await self._redis.hset(keys.token(_digest(token)), mapping={"role": role, "tenant": tenant})
        return token

    @fail_closed
    async def revoke(self, token: str) -> bool:
        return bool(await self._redis.delete(keys.token(_digest(token))))

    @fail_closed
    async def resolve(self, token: str) -> Principal | None:
        if token.startswith(_ACTION_PREFIX):
            return await self._resolve_action(token)
        raw = await self._redis.hgetall(keys.token(_digest(token)))
        if not raw:
            return None
        return Principal(role=raw[b"role"].decode(), tenant=raw.get(b"tenant", b"").decode())

    def mint_action_token(self, tenant: str, run: str, action: str, attempt: int) -> str:
        body = f"{tenant}.{run}.{action}.{attempt}"
        return f"{_ACTION_PREFIX}{body}.{self._sign(body)}"

    async def _resolve_action(self, token: str) -> Principal | None:
        parts = token[len(_ACTION_PREFIX) :].split(".")
        if len(parts) != 5:
            return None
        tenant, run, action, attempt, signature = parts
        if not hmac.compare_digest(signature, self._sign(f"{tenant}.{run}.{action}.{attempt}")):
            return None
        # Signed, so the names are ones the server minted; is that attempt still leased?
        state = await self._redis.hget(keys.TenantKeys(tenant).states(run), action)
        if state is None or not _holds_lease(state, attempt):
            return None
        return Principal(role="action", tenant=tenant, run=run, action=action)

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._signing_key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")
