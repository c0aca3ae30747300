"""Errors the SDK raises. One root: FanoutError.

Shaped like Flyte 2's `flyte.errors`: an action's end reaches its awaiting
parent as a BaseRuntimeError subclass (RuntimeUserError with the child's
exception type name as `.code`, TaskTimeoutError, ActionAbortedError,
OOMError, RuntimeSystemError); a task raises NonRecoverableError to fail
without retries. The older names (ActionFailed, RunFailed, QuotaExceeded,
FanoutLimitExceeded) stay as the bases they were.
"""

from __future__ import annotations

from collections.abc import Sequence


class FanoutError(Exception):
    """Root of every error the SDK raises on purpose."""


class ConfigError(FanoutError):
    """No endpoint or token, or an unreadable config file."""


# Flyte's name for it: the SDK used before init() / init_from_config().
InitializationError = ConfigError


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


class BaseRuntimeError(FanoutError):
    """Flyte's base of the errors a task's execution ends with: `code`, `kind` and the root cause's message."""

    def __init__(self, code: str, kind: str, root_cause_message: str, worker: str | None = None) -> None:
        super().__init__(f"{code}: {root_cause_message}")
        self.code = code
        self.kind = kind
        self.root_cause_message = root_cause_message
        self.worker = worker


class ActionFailed(BaseRuntimeError):
    """A child action ended in FAILED, ABORTED or TIMED_OUT.

    `error_type` (also `code`, as Flyte names it) and `message` are the
    child's own exception type name and message, so a parent can tell what
    went wrong without reading logs. The subclasses below say which kind of
    end it was; `action_failed` picks one.
    """

    kind_name = "unknown"

    def __init__(self, action: str, phase: str, error_type: str, message: str, traceback: str = "") -> None:
        super().__init__(error_type, self.kind_name, message)
        self.action = action
        self.phase = phase
        self.error_type = error_type
        self.message = message
        self.remote_traceback = traceback
        self.args = (f"action {action} {phase.lower()}: {error_type}: {message}",)


class RuntimeUserError(ActionFailed):
    """The task's own code raised; `code` is its exception type name."""

    kind_name = "user"


class RuntimeSystemError(ActionFailed):
    """The platform failed the action: its process could not start, died, or its result could not be kept."""

    kind_name = "system"


class OOMError(RuntimeSystemError):
    """The action ran out of memory (its memory limit killed it, or it raised MemoryError)."""


class TaskTimeoutError(ActionFailed):
    """The action ran longer than its timeout (TIMED_OUT)."""

    kind_name = "user"


class ActionAbortedError(ActionFailed):
    """The action was aborted: by `fanout abort`, or because its run ended (ABORTED)."""

    kind_name = "user"


class NonRecoverableError(FanoutError):
    """Raise it in a task to fail the action at once: retries left are not used.

    A parent awaiting that action sees a RuntimeUserError whose code is this class's name.
    """

    def __init__(self, message: str, code: str = "NonRecoverableError") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class RunFailed(ActionFailed):
    """The run's root action did not succeed. Also an instance of the kind of its end (RuntimeUserError, ...)."""


# The error types the platform (not the task) gives a failure, and those that mean memory ran out.
SYSTEM_ERROR_TYPES = frozenset({"BackendError", "LaunchError", "ProcessExited", "OutputTooLarge"})
OOM_ERROR_TYPES = frozenset({"OOMKilled", "MemoryError"})

_KINDS: tuple[type[ActionFailed], ...] = (
    RuntimeUserError,
    RuntimeSystemError,
    OOMError,
    TaskTimeoutError,
    ActionAbortedError,
)
# RunFailed beside each kind, so `except RunFailed` and `except RuntimeUserError` both catch a failed run.
_RUN_KINDS: dict[type[ActionFailed], type[RunFailed]] = {
    kind: type(f"RunFailed{kind.__name__}", (RunFailed, kind), {"__module__": __name__}) for kind in _KINDS
}


def action_failed(
    action: str, phase: str, error_type: str, message: str, traceback: str = "", *, run: bool = False
) -> ActionFailed:
    """The error an awaiting parent (or, with run=True, `Run.outputs()`) raises for an action's end."""
    kind: type[ActionFailed]
    if phase == "TIMED_OUT":
        kind = TaskTimeoutError
    elif phase == "ABORTED":
        kind = ActionAbortedError
    elif error_type in OOM_ERROR_TYPES:
        kind = OOMError
    elif error_type in SYSTEM_ERROR_TYPES:
        kind = RuntimeSystemError
    else:
        kind = RuntimeUserError
    cls: type[ActionFailed] = _RUN_KINDS[kind] if run else kind
    return cls(action, phase, error_type, message, traceback)
