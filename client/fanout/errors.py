"""Errors the SDK raises. One root: FanoutError."""

from __future__ import annotations

from collections.abc import Sequence


class FanoutError(Exception):
    """Root of every error the SDK raises on purpose."""


class ConfigError(FanoutError):
    """No endpoint or token, or an unreadable config file."""


class AuthError(FanoutError):
    """The token is missing, wrong, revoked, or not allowed to do this."""


class NotFound(FanoutError):
    pass


class InvalidRequest(FanoutError):
    """The server refused the request as malformed; nothing was written.

    `violations` are the server's (field, description) pairs, e.g.
    ("actions[3].inputs", "action 'x': inputs are ... bytes, max_payload_bytes is ..."),
    when it named the parts at fault.
    """

    def __init__(self, message: str, violations: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.violations = list(violations)


class OutputTooLarge(FanoutError):
    """A task's result is bigger than its tenant's max_payload_bytes; the action fails with this."""


class Unavailable(FanoutError):
    """The control plane (or its Redis) cannot be reached right now."""


class DeadlineExceeded(FanoutError):
    """The call or wait did not finish in the time given."""


class QuotaExceeded(FanoutError):
    """A tenant limit would be passed; nothing was charged."""

    def __init__(
        self, message: str, limit_name: str, limit: int, used: int, requested: int, retry_after: float | None
    ) -> None:
        super().__init__(message)
        self.limit_name = limit_name
        self.limit = limit
        self.used = used
        self.requested = requested
        self.retry_after = retry_after


class FanoutLimitExceeded(QuotaExceeded):
    """The run would hold more than max_fanout actions; the whole batch was rejected."""


class ActionFailed(FanoutError):
    """A child action ended in FAILED, ABORTED or TIMED_OUT.

    `error_type` and `message` are the child's own exception type name and
    message, so a parent can tell what went wrong without reading logs.
    """

    def __init__(self, action: str, phase: str, error_type: str, message: str, traceback: str = "") -> None:
        self.action = action
        self.phase = phase
        self.error_type = error_type
        self.message = message
        self.remote_traceback = traceback
        super().__init__(f"action {action} {phase.lower()}: {error_type}: {message}")


class RunFailed(ActionFailed):
    """The run's root action did not succeed."""
