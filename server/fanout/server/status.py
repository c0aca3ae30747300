"""The one place store errors become gRPC statuses (with rich error details)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from fanout.quota import errors


class ServiceError(Exception):
    """Raised by servicers for request problems found before touching the store.

    `violations` are (field, description) pairs, e.g. ("actions[3].inputs",
    "..."), sent as a google.rpc.BadRequest detail so a client can tell
    which items of a batch were at fault.
    """

    def __init__(self, code: grpc.StatusCode, message: str, violations: Sequence[tuple[str, str]] = ()) -> None:
        self.code = code
        self.violations = list(violations)
        super().__init__(message)


def invalid(message: str, violations: Sequence[tuple[str, str]] = ()) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, violations)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def denied(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, message)


_SIMPLE: dict[type[errors.StoreError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def to_status(exc: Exception) -> grpc.Status | None:
    """The status for an expected error, or None for a bug (left to gRPC as INTERNAL)."""
    status = to_rpc_status(exc)
    return None if status is None else rpc_status.to_status(status)


def to_rpc_status(exc: Exception) -> status_pb2.Status | None:
    """The google.rpc.Status for an expected error (also sent inside messages, e.g. per SubmitMany section)."""
    if isinstance(exc, ServiceError):
        return _bad_request(exc) if exc.violations else _plain(exc.code, str(exc))
    if isinstance(exc, errors.QuotaExceeded):
        return _quota_exceeded(exc)
    for cls, code in _SIMPLE.items():
        if isinstance(exc, cls):
            return _plain(code, str(exc))
    return None


def _plain(code: grpc.StatusCode, message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code.value[0], message=message)


def _bad_request(exc: ServiceError) -> status_pb2.Status:
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in exc.violations
        ]
    )
    status = status_pb2.Status(code=exc.code.value[0], message=str(exc))
    status.details.add().Pack(detail)
    return status


# Refusals a tenant can ask an admin to lift (`fanout quota request`); max_queued is a wait, not a wall.
ASKABLE_LIMITS = frozenset({"max_fanout", "max_stored_bytes"})


def _quota_exceeded(exc: errors.QuotaExceeded) -> status_pb2.Status:
    failure = error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=exc.limit_name,
                description=f"limit {exc.limit}, used {exc.used}, requested {exc.requested}",
            )
        ]
    )
    # ErrorInfo carries the same numbers in machine-readable form for clients.
    info = error_details_pb2.ErrorInfo(
        reason=f"{exc.limit_name.upper()}_EXCEEDED",
        domain="fanout",
        metadata={"limit": str(exc.limit), "used": str(exc.used), "requested": str(exc.requested)},
    )
    message = str(exc)
    if exc.limit_name in ASKABLE_LIMITS:
        flag = "--" + exc.limit_name.replace("_", "-")
        message += f"; to ask for more, run: fanout quota request {flag} N --reason TEXT"
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)
    status.details.add().Pack(failure)
    status.details.add().Pack(info)
    if exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status
