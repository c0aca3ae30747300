"""Tokens minted by a server before the {_tokens} hash tag keep working after an upgrade."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import redis

from fanout.quota import keys
from fanout.server.app import create_server
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from tests.helpers import LoopThread

SECRET = "fo_a_" + "x" * 43


def test_a_starting_server_moves_the_tokens_an_older_server_kept(
    loop_thread: LoopThread, killable_redis: RedisProcess, settings: Settings
) -> None:
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    with redis.Redis.from_url(killable_redis.url) as store:
        # The layout of the servers before this one: no hash tag on the three token keys.
        record = {"role": "admin", "tenant": "", "id": "0123456789ab", "created": "1.0", "name": "old-admin"}
        store.hset(keys.legacy_token(digest), mapping=record)
        store.hset(keys.LEGACY_TOKEN_IDS, "0123456789ab", digest)
        store.hset(keys.LEGACY_TOKEN_NAMES, "old-admin", "0123456789ab")

        plane = loop_thread.run(create_server(replace(settings, redis_url=killable_redis.url)))
        try:
            principal = loop_thread.run(plane.tokens.resolve(SECRET))
            assert principal is not None and principal.role == "admin"
            assert loop_thread.run(plane.tokens.find_id("old-admin")) == "0123456789ab"
            assert not store.exists(keys.legacy_token(digest), keys.LEGACY_TOKEN_IDS, keys.LEGACY_TOKEN_NAMES)
            assert loop_thread.run(plane.tokens.move_legacy_keys()) == 0  # a second server moves nothing
        finally:
            loop_thread.run(plane.stop(grace=1))
