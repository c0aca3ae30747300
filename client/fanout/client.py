"""Low-level clients for the fanout.v1 services: `Client` (blocking) and `AsyncClient`.

Both send the bearer token with every call and turn gRPC errors into
fanout.errors exceptions, so callers never handle raw status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from fanout import errors
from fanout.channel import async_channel, sync_channel
from fanout.config import ClientConfig
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc, admin_pb2_grpc, bundles_pb2_grpc
from fanout.v1 import admin_pb2 as apb
from fanout.v1 import bundles_pb2 as bpb

TERMINAL_PHASES = frozenset({pb.SUCCEEDED, pb.FAILED, pb.ABORTED, pb.TIMED_OUT})
# Bundles travel in pieces of this size: one gRPC message is capped.
BUNDLE_CHUNK_BYTES = 1 << 20
BUNDLE_TIMEOUT_SECONDS = 300.0


def translate(exc: grpc.RpcError) -> errors.FanoutError:
    """The SDK error for a failed call, with quota details when the server sent them."""
    status = rpc_status.from_call(exc)
    if status is None:
        status = status_pb2.Status(code=exc.code().value[0], message=exc.details() or exc.code().name)
    return from_status(status)


def from_status(status: status_pb2.Status) -> errors.FanoutError:
    """The SDK error for a google.rpc.Status: a failed call's, or one sent in a message (SubmitMany, WatchMany)."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    message = status.message or code.name
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return _quota_error(status, message)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return errors.AuthError(message)
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.NotFound(message)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS):
        return errors.InvalidRequest(message, _field_violations(status))
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.Unavailable(message)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return errors.DeadlineExceeded(message)
    return errors.FanoutError(f"{code.name}: {message}")


def _field_violations(status: status_pb2.Status) -> list[tuple[str, str]]:
    """The (field, description) pairs of a google.rpc.BadRequest detail, if the server sent one."""
    out: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [(v.field, v.description) for v in bad.field_violations]
    return out


def _quota_error(status: status_pb2.Status, message: str) -> errors.FanoutError:
    subject = ""
    numbers: dict[str, str] = {}
    retry_after = None
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            subject = failure.violations[0].subject if failure.violations else ""
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            numbers = dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            delay = error_details_pb2.RetryInfo()
            detail.Unpack(delay)
            retry_after = delay.retry_delay.ToNanoseconds() / 1e9
    if not subject:
        return errors.FanoutError(f"RESOURCE_EXHAUSTED: {message}")
    cls = errors.FanoutLimitExceeded if subject == "max_fanout" else errors.QuotaExceeded
    return cls(
        message,
        subject,
        int(numbers.get("limit", 0)),
        int(numbers.get("used", 0)),
        int(numbers.get("requested", 0)),
        retry_after,
    )


class Client:
    """Blocking client, for scripts, the CLI and `fanout.run`."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config.require()
        self._channel = sync_channel(config)
        self._metadata = (("authorization", f"Bearer {config.token}"),)
        self.actions = actions_pb2_grpc.ActionServiceStub(self._channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self.quota = admin_pb2_grpc.QuotaServiceStub(self._channel)
        self.bundles = bundles_pb2_grpc.BundleServiceStub(self._channel)

    def call(self, method: Any, request: Any, timeout: float | None = 60.0) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise translate(exc) from None

    def create_run(self, root: pb.ActionSpec, run_name: str = "") -> pb.Run:
        return self.call(self.actions.CreateRun, pb.CreateRunRequest(run_name=run_name, root=root)).run

    def submit_batch(
        self, run: str, parent: str, actions: Sequence[pb.ActionSpec], dry_run: bool = False
    ) -> pb.SubmitBatchResponse:
        return self.call(
            self.actions.SubmitBatch, pb.SubmitBatchRequest(run=run, parent=parent, actions=actions, dry_run=dry_run)
        )

    def get_run(self, run: str) -> pb.Run:
        return self.call(self.actions.GetRun, pb.GetRunRequest(run=run))

    def list_runs(self, request: pb.ListRunsRequest) -> pb.ListRunsResponse:
        return self.call(self.actions.ListRuns, request)

    def list_actions(self, request: pb.ListActionsRequest) -> pb.ListActionsResponse:
        return self.call(self.actions.ListActions, request)

    def get_action(self, run: str, name: str) -> pb.ActionStatus:
        return self.call(self.actions.GetAction, pb.GetActionRequest(run=run, name=name))

    def get_quota(self) -> pb.Quota:
        return self.call(self.actions.GetQuota, pb.GetQuotaRequest())

    def get_logs(self, run: str, name: str, attempt: int = 0) -> pb.GetLogsResponse:
        """What one attempt of an action printed (0: its latest), once that attempt ended."""
        return self.call(self.actions.GetLogs, pb.GetLogsRequest(run=run, name=name, attempt=attempt))

    def abort_run(self, run: str, reason: str = "") -> int:
        return int(self.call(self.actions.AbortRun, pb.AbortRunRequest(run=run, reason=reason)).aborted)

    def abort_actions(self, run: str, names: Sequence[str], reason: str = "") -> int:
        """Abort the named actions of `run` and all their descendants; returns how many this call aborted."""
        request = pb.AbortActionRequest(run=run, names=names, reason=reason)
        return int(self.call(self.actions.AbortAction, request).aborted)

    def watch_children(
        self,
        run: str,
        parent: str = "",
        cursor: str = "",
        timeout: float | None = None,
        batched: bool = False,
        with_groups: bool = False,
    ) -> Iterator[pb.WatchEvent]:
        """Events of a watch; batched, each carries every change ready (`updates`), else one (`update`).

        With `with_groups`, each status carries its action's group (for people watching; it costs the server reads).
        """
        request = pb.WatchChildrenRequest(
            run=run, parent=parent, cursor=cursor, batched=batched, with_groups=with_groups
        )
        stream = self.actions.WatchChildren(request, metadata=self._metadata, timeout=timeout)
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise translate(exc) from None
        finally:
            stream.cancel()

    def has_bundle(self, digest: str) -> bool:
        return bool(self.call(self.bundles.HasBundle, bpb.HasBundleRequest(digest=digest)).present)

    def upload_bundle(self, digest: str, data: bytes) -> bpb.UploadBundleResponse:
        """Send a bundle in chunks; the server checks the digest and its caps before storing it."""

        def chunks() -> Iterator[bpb.BundleChunk]:
            yield bpb.BundleChunk(digest=digest, size=len(data), data=data[:BUNDLE_CHUNK_BYTES])
            for start in range(BUNDLE_CHUNK_BYTES, len(data), BUNDLE_CHUNK_BYTES):
                yield bpb.BundleChunk(data=data[start : start + BUNDLE_CHUNK_BYTES])

        return self.call(self.bundles.UploadBundle, chunks(), timeout=BUNDLE_TIMEOUT_SECONDS)

    def get_bundle(self, digest: str) -> bytes:
        stream = self.bundles.GetBundle(
            bpb.GetBundleRequest(digest=digest), metadata=self._metadata, timeout=BUNDLE_TIMEOUT_SECONDS
        )
        try:
            return b"".join(chunk.data for chunk in stream)
        except grpc.RpcError as exc:
            raise translate(exc) from None

    # Admin ---------------------------------------------------------------

    def create_tenant(self, tenant: str) -> apb.CreateTenantResponse:
        return self.call(self.admin.CreateTenant, apb.CreateTenantRequest(tenant=tenant))

    def create_token(self, role: str, tenant: str = "") -> str:
        return self.create_token_with_id(role, tenant)[0]

    def create_token_with_id(self, role: str, tenant: str = "") -> tuple[str, str]:
        """(token, id): the token is shown once; the id names it later, in list_tokens and revoke_token."""
        created = self.call(self.admin.CreateToken, apb.CreateTokenRequest(role=role, tenant=tenant))
        return str(created.token), str(created.token_id)

    def revoke_token(self, token_id: str) -> bool:
        return bool(self.call(self.admin.RevokeToken, apb.RevokeTokenRequest(token_id=token_id)).revoked)

    def list_tokens(self, tenant: str = "") -> list[apb.TokenInfo]:
        return list(self.call(self.admin.ListTokens, apb.ListTokensRequest(tenant=tenant)).tokens)

    def set_limits(self, tenant: str, reason: str, **limits: int) -> apb.TenantLimits:
        return self.call(
            self.admin.SetLimits, apb.SetLimitsRequest(tenant=tenant, limits=apb.Limits(**limits), reason=reason)
        )

    def get_limits(self, tenant: str) -> apb.TenantLimits:
        return self.call(self.admin.GetLimits, apb.GetLimitsRequest(tenant=tenant))

    def audit(self, tenant: str, limit: int = 100) -> list[apb.AuditEntry]:
        return list(self.call(self.admin.ListAudit, apb.ListAuditRequest(tenant=tenant, limit=limit)).entries)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client, used inside actions by the controller.

    A worker shares one client (one channel) among the actions it runs, each
    with its own action token: it makes the client with tokens_per_call=True
    and passes `token=` on every call.
    """

    def __init__(self, config: ClientConfig, *, tokens_per_call: bool = False) -> None:
        if tokens_per_call:
            if not config.endpoint:
                config.require()  # its error names the missing endpoint
            self.config = config
        else:
            self.config = config.require()
        self._channel: aio.Channel | None = None
        self._stub: actions_pb2_grpc.ActionServiceStub | None = None
        self._metadata = (("authorization", f"Bearer {config.token}"),)
        # For call_now(): a plain channel, made on first use, whose own threads send and receive.
        self._sync_channel: grpc.Channel | None = None
        self._sync_stub: actions_pb2_grpc.ActionServiceStub | None = None

    def _metadata_for(self, token: str | None) -> tuple[tuple[str, str], ...]:
        return self._metadata if token is None else (("authorization", f"Bearer {token}"),)

    @property
    def actions(self) -> actions_pb2_grpc.ActionServiceStub:
        # The channel is made on first use: most actions are leaves that never
        # call the control plane, and a gRPC channel costs each one its setup.
        if self._stub is None:
            self._channel = async_channel(self.config)
            self._stub = actions_pb2_grpc.ActionServiceStub(self._channel)
        return self._stub

    async def call(self, method: Any, request: Any, timeout: float | None = 120.0, token: str | None = None) -> Any:
        try:
            return await method(request, metadata=self._metadata_for(token), timeout=timeout)
        except grpc.RpcError as exc:
            raise translate(exc) from None

    def call_now(
        self, method: str, request: Any, timeout: float | None = 120.0, token: str | None = None
    ) -> asyncio.Future[Any]:
        """Put an ActionService call on the wire before returning; the future gets its reply (or error).

        For a long stretch of the event loop, such as the turn in which a gather starts thousands of
        child calls: an aio call would go out only once the turn ended, and the control plane would
        sit idle meanwhile. This one goes through a plain gRPC channel, whose threads send it at once
        and hand the reply back to the loop.
        """
        loop = asyncio.get_running_loop()
        if self._sync_stub is None:
            self._sync_channel = sync_channel(self.config)
            self._sync_stub = actions_pb2_grpc.ActionServiceStub(self._sync_channel)
        reply: asyncio.Future[Any] = loop.create_future()
        call = getattr(self._sync_stub, method).future(request, metadata=self._metadata_for(token), timeout=timeout)
        reply.add_done_callback(lambda _: call.cancel() if reply.cancelled() else None)

        def answered(_: grpc.Future) -> None:  # in a gRPC thread, or here if it is answered already
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, reply, call)

        call.add_done_callback(answered)
        return reply

    async def submit_batch(
        self, run: str, parent: str, actions: Sequence[pb.ActionSpec], token: str | None = None
    ) -> pb.SubmitBatchResponse:
        return await self.call(
            self.actions.SubmitBatch, pb.SubmitBatchRequest(run=run, parent=parent, actions=actions), token=token
        )

    async def watch_children(
        self, run: str, parent: str, cursor: str = "", token: str | None = None, batched: bool = False
    ) -> AsyncIterator[pb.WatchEvent]:
        """Events of a watch; batched, each carries every change ready (`updates`), else one (`update`)."""
        request = pb.WatchChildrenRequest(run=run, parent=parent, cursor=cursor, batched=batched)
        call = self.actions.WatchChildren(request, metadata=self._metadata_for(token))
        try:
            async for event in call:
                yield event
        except grpc.RpcError as exc:
            raise translate(exc) from None
        finally:
            call.cancel()

    async def get_bundle(self, digest: str, token: str | None = None) -> bytes:
        """The bytes of a code bundle of the caller's tenant (a worker fetches with the action's token)."""
        self.actions  # noqa: B018 - makes the channel on first use
        stub = bundles_pb2_grpc.BundleServiceStub(self._channel)
        call = stub.GetBundle(
            bpb.GetBundleRequest(digest=digest), metadata=self._metadata_for(token), timeout=BUNDLE_TIMEOUT_SECONDS
        )
        try:
            return b"".join([chunk.data async for chunk in call])
        except grpc.RpcError as exc:
            raise translate(exc) from None

    async def close(self) -> None:
        if self._sync_channel is not None:
            self._sync_channel.close()
        if self._channel is not None:
            await self._channel.close()


def _settle(reply: asyncio.Future[Any], call: grpc.Future) -> None:
    """Hand a call_now() call's outcome to the future its caller awaits."""
    if reply.done():
        return
    try:
        reply.set_result(call.result())
    except grpc.FutureCancelledError:
        reply.cancel()
    except grpc.RpcError as exc:
        reply.set_exception(translate(exc))
