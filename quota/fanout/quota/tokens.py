"""API tokens: random, shown once, stored only as SHA-256 hashes.

Each has a short id and a unique name, neither secret: admins list, rotate
and revoke tokens by either, so the secret never has to travel (or sit in a
shell history) again, and the audit trail names the acting token's name.

Action tokens are different: they are minted for every leased action, so they
are MACs over (tenant, run, action, attempt), costing no write per action:
keyed BLAKE2s (a MAC by design, one C call), not HMAC-SHA256, which costs
four times as much per token on the lease path.
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
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from fanout.quota import keys, phases
from fanout.quota.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from fanout.quota.failclosed import fail_closed

ROLES = ("tenant", "admin", "dispatcher", "action")
_ACTION_PREFIX = "fa2."
# The previous format (HMAC-SHA256), still verified so that a rolling upgrade does not
# refuse the parents running on tokens an older server minted; never minted any more.
_LEGACY_ACTION_PREFIX = "fa1."
TOKEN_ID_RE = re.compile(r"[0-9a-f]{12}")
# Names are what the audit trail shows as the actor; never 12 hex digits, so a name is never mistaken for an id.
TOKEN_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,62}")
# Tokens read per round trip when listing: each command stays small however many there are.
LIST_CHUNK = 500


@dataclass(frozen=True)
class NewToken:
    token: str  # the secret, shown once
    id: str
    name: str = ""


@dataclass(frozen=True)
class TokenInfo:
    id: str
    role: str
    tenant: str
    created_at: float
    name: str = ""
    owner: str = ""


@dataclass(frozen=True)
class Principal:
    role: str
    # The tenant a tenant or action token belongs to; for dispatchers the
    # tenant they serve, "" meaning every tenant; "" for admins.
    tenant: str = ""
    run: str = ""
    action: str = ""
    # The token's name (admin, tenant and dispatcher tokens): the actor the audit trail shows.
    name: str = ""
    attempt: int = 0  # an action token's attempt

    @property
    def label(self) -> str:
        return f"{self.role}:{self.tenant}" if self.tenant else self.role

    @property
    def actor(self) -> str:
        return self.name or self.label


def _holds_lease(state: bytes, attempt: str) -> bool:
    """True while `attempt` is the current one and leased: past QUEUED, not yet terminal."""
    phase, current, _ = state.split(b":", 2)
    return current.decode() == attempt and phases.QUEUED < int(phase) and not phases.is_terminal(int(phase))


def _new_secret(role: str) -> str:
    return f"fo_{role[0]}_{secrets.token_urlsafe(32)}"


def _info(token_id: str, raw: dict[bytes, bytes]) -> TokenInfo:
    return TokenInfo(
        token_id,
        raw[b"role"].decode(),
        raw.get(b"tenant", b"").decode(),
        float(raw.get(b"created", b"0")),
        raw.get(b"name", b"").decode(),
        raw.get(b"owner", b"").decode(),
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, redis: aioredis.Redis, signing_key: bytes, clock: Callable[[], float] = time.time) -> None:
        # Typed loosely: redis-py types replies as str | bytes; with decode_responses off they are bytes.
        self._redis: Any = redis
        self._signer = ActionSigner(signing_key)
        self._clock = clock

    @fail_closed
    async def move_legacy_keys(self) -> int:
        """Move tokens kept under the keys of servers before the {_tokens} hash tag; returns how many.

        Runs when a server starts. Each token moves in one transaction (its record, its id and its
        name), so two servers starting at once move each one exactly once and a crash between tokens
        leaves every token usable under one of the two layouts, the rest moved by the next start."""
        ids = await self._redis.hgetall(keys.LEGACY_TOKEN_IDS)
        names = {v: k for k, v in (await self._redis.hgetall(keys.LEGACY_TOKEN_NAMES)).items()}
        moved = 0
        for token_id, digest in ids.items():
            record = await self._redis.hgetall(keys.legacy_token(digest.decode()))
            async with self._redis.pipeline(transaction=True) as pipe:
                if record:
                    pipe.hset(keys.token(digest.decode()), mapping=record)
                pipe.hset(keys.TOKEN_IDS, token_id, digest)
                if token_id in names:
                    pipe.hset(keys.TOKEN_NAMES, names[token_id], token_id)
                pipe.delete(keys.legacy_token(digest.decode()))
                pipe.hdel(keys.LEGACY_TOKEN_IDS, token_id)
                if token_id in names:
                    pipe.hdel(keys.LEGACY_TOKEN_NAMES, names[token_id])
                await pipe.execute()
            moved += 1
        return moved

    @fail_closed
    async def issue(self, role: str, tenant: str = "", name: str = "", owner: str = "") -> NewToken:
        """Mint a token. Without a name it is named "<role>-<id>"; a name already taken is refused."""
        if role not in ("tenant", "admin", "dispatcher"):
            raise ValueError(f"cannot mint a {role!r} token here")
        if name and (not TOKEN_NAME_RE.fullmatch(name) or TOKEN_ID_RE.fullmatch(name)):
            raise InvalidArgument(
                f"token name {name!r}: 1-63 of a-z 0-9 . _ @ -, starting with a letter or digit, not 12 hex digits"
            )
        if len(owner) > 200:
            raise InvalidArgument("the owner is at most 200 characters")
        token, token_id = _new_secret(role), secrets.token_hex(6)
        name = name or f"{role}-{token_id}"
        digest = _digest(token)
        record = {
            "role": role, "tenant": tenant, "id": token_id, "created": repr(self._clock()), "name": name, "owner": owner
        }  # fmt: skip
        async with self._redis.pipeline(transaction=True) as pipe:
            # All three or none, and only while the name is free: a name taken meanwhile fails the EXEC.
            await pipe.watch(keys.TOKEN_NAMES)
            if await pipe.hexists(keys.TOKEN_NAMES, name):
                raise AlreadyExists(f"a token named {name!r} exists; rotate it or choose another name")
            pipe.multi()
            pipe.hset(keys.TOKEN_NAMES, name, token_id)
            pipe.hset(keys.token(digest), mapping=record)
            pipe.hset(keys.TOKEN_IDS, token_id, digest)
            try:
                await pipe.execute()
            except aioredis.WatchError:
                raise AlreadyExists(f"a token named {name!r} was just created; choose another name") from None
        return NewToken(token, token_id, name)

    @fail_closed
    async def find_id(self, name_or_id: str) -> str | None:
        """The id of the token with this id or name, None if there is none."""
        if TOKEN_ID_RE.fullmatch(name_or_id):
            return name_or_id if await self._redis.hexists(keys.TOKEN_IDS, name_or_id) else None
        found = await self._redis.hget(keys.TOKEN_NAMES, name_or_id)
        return found.decode() if found else None

    @fail_closed
    async def info(self, token_id: str) -> TokenInfo | None:
        digest = await self._redis.hget(keys.TOKEN_IDS, token_id)
        raw = await self._redis.hgetall(keys.token(digest.decode())) if digest else None
        return _info(token_id, raw) if raw else None

    @fail_closed
    async def rotate(self, token_id: str) -> NewToken | None:
        """A new secret for the same id, name, owner and scope; the old secret stops working at once."""
        async with self._redis.pipeline(transaction=True) as pipe:
            # Optimistic: a rotate or revoke of the same token meanwhile makes this one retry or see it gone.
            for _ in range(5):
                try:
                    await pipe.watch(keys.TOKEN_IDS)
                    old = await pipe.hget(keys.TOKEN_IDS, token_id)
                    record = await pipe.hgetall(keys.token(old.decode())) if old else None
                    if not record:
                        return None
                    fields = {k.decode(): v.decode() for k, v in record.items()}
                    token = _new_secret(fields["role"])
                    pipe.multi()
                    pipe.delete(keys.token(old.decode()))
                    pipe.hset(keys.token(_digest(token)), mapping=fields)
                    pipe.hset(keys.TOKEN_IDS, token_id, _digest(token))
                    await pipe.execute()
                    return NewToken(token, token_id, fields.get("name", ""))
                except aioredis.WatchError:
                    continue
        raise FailedPrecondition("the token changed during five attempts to rotate it; try again")

    async def create(self, role: str, tenant: str = "") -> str:
        """Just the secret, for callers that never revoke by id (bootstrap, tests)."""
        return (await self.issue(role, tenant)).token

    @fail_closed
    async def revoke_id(self, token_id: str) -> bool:
        # A rotation between reading the digest and deleting it leaves a new digest: look again.
        for _ in range(3):
            digest = await self._redis.hget(keys.TOKEN_IDS, token_id)
            if digest is None:
                return False
            if await self._delete(digest.decode()):
                return True
        return False

    @fail_closed
    async def revoke(self, token: str) -> bool:
        return await self._delete(_digest(token))

    async def _delete(self, digest: str) -> bool:
        token_id, name = await self._redis.hmget(keys.token(digest), ["id", "name"])
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.token(digest))
            if token_id:
                pipe.hdel(keys.TOKEN_IDS, token_id)
            if name:  # the name was reserved for this token alone when it was minted, so it is free again
                pipe.hdel(keys.TOKEN_NAMES, name)
            deleted = (await pipe.execute())[0]
        return bool(deleted)

    @fail_closed
    async def list_tokens(self, tenant: str = "") -> list[TokenInfo]:
        """Every token with an id (of `tenant`, if given), oldest first; never the secrets."""
        found: list[TokenInfo] = []
        pairs = [(i.decode(), d.decode()) async for i, d in self._redis.hscan_iter(keys.TOKEN_IDS, count=LIST_CHUNK)]
        for start in range(0, len(pairs), LIST_CHUNK):
            chunk = pairs[start : start + LIST_CHUNK]
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, digest in chunk:
                    pipe.hgetall(keys.token(digest))
                records = await pipe.execute()
            for (token_id, _), raw in zip(chunk, records, strict=True):
                if raw and (not tenant or raw.get(b"tenant", b"").decode() == tenant):
                    found.append(_info(token_id, raw))
        return sorted(found, key=lambda t: t.created_at)

    @fail_closed
    async def resolve(self, token: str) -> Principal | None:
        if token.startswith((_ACTION_PREFIX, _LEGACY_ACTION_PREFIX)):
            return await self._resolve_action(token)
        raw = await self._redis.hgetall(keys.token(_digest(token)))
        if not raw:
            return None
        return Principal(
            role=raw[b"role"].decode(), tenant=raw.get(b"tenant", b"").decode(), name=raw.get(b"name", b"").decode()
        )

    def mint_action_token(self, tenant: str, run: str, action: str, attempt: int) -> str:
        return self._signer.token(tenant, run, action, attempt)

    async def _resolve_action(self, token: str) -> Principal | None:
        legacy = token.startswith(_LEGACY_ACTION_PREFIX)
        parts = token[len(_ACTION_PREFIX) :].split(".")  # both prefixes are 4 characters
        if len(parts) != 5:
            return None
        tenant, run, action, attempt, signature = parts
        body = f"{tenant}.{run}.{action}.{attempt}"
        expected = self._signer.sign_legacy(body) if legacy else self._signer.sign(body)
        if not hmac.compare_digest(signature, expected):
            return None
        # Signed, so the names are ones the server minted; is that attempt still leased?
        state = await self._redis.hget(keys.TenantKeys(tenant).states(run), action)
        if state is None or not _holds_lease(state, attempt):
            return None
        return Principal(role="action", tenant=tenant, run=run, action=action, attempt=int(attempt))


class ActionSigner:
    """Mints action tokens with a server's signing key."""

    def __init__(self, signing_key: bytes) -> None:
        # BLAKE2s takes a key of at most 32 bytes; the key file may hold more, so its digest keys it.
        self._key = hashlib.sha256(signing_key).digest()
        self._legacy_key = signing_key

    def token(self, tenant: str, run: str, action: str, attempt: int) -> str:
        body = f"{tenant}.{run}.{action}.{attempt}"
        return f"{_ACTION_PREFIX}{body}.{self.sign(body)}"

    def sign(self, body: str) -> str:
        mac = hashlib.blake2s(body.encode(), key=self._key, digest_size=24).digest()
        return base64.urlsafe_b64encode(mac).decode()

    def sign_legacy(self, body: str) -> str:
        """The signature of the fa1 format, for verifying tokens older servers minted."""
        mac = hmac.new(self._legacy_key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")
