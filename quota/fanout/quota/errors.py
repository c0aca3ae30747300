"""One exception root for the store; the server maps each class to a gRPC status once."""

from __future__ import annotations


class StoreError(Exception):
    """Root of every error the quota/state layer raises on purpose."""


class InvalidArgument(StoreError):
    pass


class NotFound(StoreError):
    pass


class FailedPrecondition(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class PermissionDenied(StoreError):
    """The caller may not touch this (an action token naming an action that is not its child)."""


class Unavailable(StoreError):
    """Redis cannot be reached: fail closed, admit nothing."""


class QuotaExceeded(StoreError):
    """A limit would be passed. `limit_name` is e.g. "max_fanout"."""

    def __init__(
        self, limit_name: str, limit: int, used: int, requested: int, retry_after: float | None = None
    ) -> None:
        self.limit_name = limit_name
        self.limit = limit
        self.used = used
        self.requested = requested
        self.retry_after = retry_after
        super().__init__(f"{limit_name} exceeded: limit {limit}, used {used}, requested {requested}")
