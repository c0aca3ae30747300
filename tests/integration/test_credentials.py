"""Credentials: busy addresses, action tokens that expire, secrets kept out of Redis and `ps`."""

from __future__ import annotations

import os
import secrets
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import redis

from fanout import errors
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.dispatch.dispatcher import Dispatcher
from fanout.quota.tokens import ActionSigner
from fanout.server import signing_key
from fanout.server.app import ControlPlane, create_server
from fanout.server.errors import StartupError
from fanout.server.redis_process import RedisProcess
from fanout.server.settings import Settings
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc
from tests.conftest import Tenant
from tests.helpers import LoopThread, eventually


def test_a_second_server_on_a_busy_port_is_refused(
    loop_thread: LoopThread, plane: ControlPlane, settings: Settings
) -> None:
    with pytest.raises(StartupError, match="in use"):
        second = loop_thread.run(create_server(replace(settings, listen=f"127.0.0.1:{plane.port}")))
        loop_thread.run(second.stop(grace=0))


def leaked_token_run(tenant: Tenant, out: Path, then: str = "true") -> str:
    """A run whose root writes its own action token to `out` (as a hostile task could), then runs `then`."""
    script = f'printf %s "$FANOUT_TOKEN" > {out}.tmp && mv {out}.tmp {out} && {then}'
    return tenant.client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["sh", "-c", script])).name


def leaked(out: Path) -> str:
    """The token the action wrote, once it is there."""
    return eventually(lambda: out.read_text() if out.exists() else "")


def string_values(redis_client: redis.Redis) -> list[bytes]:
    """Every string value in Redis small enough to be a key."""
    values = (redis_client.get(k) for k in redis_client.scan_iter(count=1000, _type="string"))
    return [v for v in values if isinstance(v, bytes) and len(v) <= 4096]


def get_run_code(endpoint: str, token: str, run: str) -> grpc.StatusCode:
    channel = grpc.insecure_channel(endpoint)
    try:
        actions_pb2_grpc.ActionServiceStub(channel).GetRun(
            pb.GetRunRequest(run=run), metadata=[("authorization", f"Bearer {token}")], timeout=10
        )
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()
    finally:
        channel.close()


def test_an_action_token_expires_when_its_action_finishes(
    tenant: Tenant, dispatcher: Dispatcher, endpoint: str, tmp_path: Path
) -> None:
    out = tmp_path / "token"
    run = leaked_token_run(tenant, out)
    eventually(lambda: tenant.client.get_run(run).phase == pb.SUCCEEDED)

    assert get_run_code(endpoint, out.read_text(), run) == grpc.StatusCode.UNAUTHENTICATED


def test_an_action_token_expires_when_its_run_is_aborted(
    tenant: Tenant, dispatcher: Dispatcher, endpoint: str, tmp_path: Path
) -> None:
    out = tmp_path / "token"
    run = leaked_token_run(tenant, out, then="sleep 30")
    token = leaked(out)
    assert get_run_code(endpoint, token, run) == grpc.StatusCode.OK  # valid while its attempt runs

    tenant.client.abort_run(run)

    assert get_run_code(endpoint, token, run) == grpc.StatusCode.UNAUTHENTICATED


def test_the_private_redis_refuses_connections_without_its_password(redis_server: RedisProcess) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_connect_timeout=2)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
    finally:
        anonymous.close()


def forged(token: str, key: bytes, run: str) -> str:
    """`token` re-signed with `key` for another run: what someone holding a dump of Redis could mint."""
    tenant, _, action, attempt, _ = token.removeprefix("fa2.").split(".")
    return ActionSigner(key).token(tenant, run, action, int(attempt))


def legacy(token: str, key: bytes, run: str) -> str:
    """`token` in the format older servers minted (fa1, HMAC-SHA256), signed with `key`, for `run`."""
    tenant, _, action, attempt, _ = token.removeprefix("fa2.").split(".")
    body = f"{tenant}.{run}.{action}.{attempt}"
    return f"fa1.{body}.{ActionSigner(key).sign_legacy(body)}"


def test_a_token_an_older_server_minted_still_acts_for_its_running_attempt(
    tenant: Tenant, dispatcher: Dispatcher, endpoint: str, settings: Settings, tmp_path: Path
) -> None:
    """A rolling upgrade must not refuse the parents that run on tokens the servers before it minted."""
    out = tmp_path / "token"
    run = leaked_token_run(tenant, out, then="sleep 30")
    key = signing_key.load(settings.signing_key_file)  # as every server reads it
    try:
        old = legacy(leaked(out), key, run)
        assert get_run_code(endpoint, old, run) == grpc.StatusCode.OK
        assert get_run_code(endpoint, legacy(leaked(out), secrets.token_bytes(32), run), run) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    finally:
        tenant.client.abort_run(run)
    eventually(lambda: get_run_code(endpoint, old, run) == grpc.StatusCode.UNAUTHENTICATED)  # and expires with it


def test_no_value_in_redis_signs_action_tokens(
    tenant: Tenant, dispatcher: Dispatcher, endpoint: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    out = tmp_path / "token"
    run = leaked_token_run(tenant, out, then="sleep 30")
    token = leaked(out)
    try:
        signers = [key for key in string_values(redis_client) if forged(token, key, run) == token]
        assert signers == [], "a value stored in Redis signs action tokens"
    finally:
        tenant.client.abort_run(run)


def test_a_token_forged_with_a_key_from_redis_is_refused(
    tenant: Tenant, dispatcher: Dispatcher, endpoint: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    out = tmp_path / "token"
    mine = leaked_token_run(tenant, out, then="sleep 30")
    token = leaked(out)
    theirs = tenant.client.create_run(pb.ActionSpec(task_ref="module:os:getcwd", command=["sleep", "30"])).name
    eventually(lambda: tenant.client.get_action(theirs, "root").phase == pb.RUNNING)
    try:
        for key in string_values(redis_client):
            for made_up in (forged(token, key, theirs), legacy(token, key, theirs)):
                assert get_run_code(endpoint, made_up, theirs) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        tenant.client.abort_run(mine)
        tenant.client.abort_run(theirs)


def test_an_acl_user_in_the_redis_url_is_used(
    loop_thread: LoopThread, settings: Settings, redis_server: RedisProcess, redis_client: redis.Redis
) -> None:
    user, password = f"fanout-acl-{os.getpid()}", secrets.token_urlsafe(16)
    redis_client.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
    try:
        acl_plane = loop_thread.run(create_server(replace(settings, redis_url=url)))
        try:
            loop_thread.run(acl_plane.actions.register_tenant("acl"))
            token = loop_thread.run(acl_plane.tokens.create("tenant", "acl"))
            with Client(ClientConfig(endpoint=f"127.0.0.1:{acl_plane.port}", token=token)) as client:
                assert client.create_run(pb.ActionSpec(task_ref="module:x:y")).action_count == 1
            clients = redis_client.client_list()
            assert any(c["user"] == user for c in clients), "the server must log in as the URL's user"
        finally:
            loop_thread.run(acl_plane.stop(grace=0))
    finally:
        redis_client.acl_deluser(user)


def test_tokens_are_listed_and_revoked_by_id_never_by_the_secret(
    admin_client: Client, tenant: Tenant, endpoint: str
) -> None:
    token, token_id = admin_client.create_token_with_id("tenant", tenant.name)
    listed = admin_client.list_tokens(tenant.name)
    assert [(t.id, t.role, t.tenant) for t in listed if t.id == token_id] == [(token_id, "tenant", tenant.name)]
    assert all(t.tenant == tenant.name for t in listed)
    assert token not in str(listed)

    with pytest.raises(errors.InvalidRequest, match="id of the token"):
        admin_client.revoke_token(token)  # the secret itself is not a handle
    with Client(ClientConfig(endpoint=endpoint, token=token)) as holder:
        assert holder.get_quota()
        assert admin_client.revoke_token(token_id) is True
        with pytest.raises(errors.AuthError, match="invalid or revoked token"):
            holder.get_quota()
    assert admin_client.revoke_token(token_id) is False
    assert token_id not in {t.id for t in admin_client.list_tokens()}


def test_a_server_without_a_signing_key_file_refuses_to_start(loop_thread: LoopThread, settings: Settings) -> None:
    with pytest.raises(StartupError, match="FANOUT_SIGNING_KEY_FILE"):
        loop_thread.run(create_server(replace(settings, signing_key_file="")))
