"""Retry and timeout policies of a task, shaped like Flyte 2's `RetryStrategy`, `Backoff` and `Timeout`.

`retries=` takes an int or a RetryStrategy, `timeout=` seconds, a timedelta
or a Timeout; anything else is a TypeError when the task is decorated (or
overridden), never later at `run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from fanout.v1 import actions_pb2 as pb


def _seconds(value: object, what: str) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{what} must be seconds (int or float) or a datetime.timedelta, not {type(value).__name__}")
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"{what} must not be negative, not {value!r}")
    return seconds


@dataclass(frozen=True)
class Backoff:
    """The wait before retry n (0-based) is min(base * factor**n, cap)."""

    base: timedelta | float = timedelta(seconds=1)
    factor: float = 2.0
    cap: timedelta | float | None = timedelta(minutes=1)

    def __post_init__(self) -> None:
        _seconds(self.base, "Backoff.base")
        if not isinstance(self.factor, int | float) or isinstance(self.factor, bool) or self.factor < 1.0:
            raise ValueError(f"Backoff.factor must be a number >= 1.0, not {self.factor!r}")
        if self.cap is None and self.factor > 1.0:
            raise ValueError("Backoff.cap is required when factor > 1, or the wait grows without bound")
        if self.cap is not None:
            _seconds(self.cap, "Backoff.cap")

    def compute_delay(self, n: int) -> timedelta:
        """The wait before retry n (0-based)."""
        base = _seconds(self.base, "Backoff.base")
        cap = math.inf if self.cap is None else _seconds(self.cap, "Backoff.cap")
        try:
            delay = base * float(self.factor) ** n
        except OverflowError:
            delay = math.inf
        return timedelta(seconds=min(delay, cap))

    def to_proto(self) -> pb.RetryBackoff:
        cap = 0.0 if self.cap is None else _seconds(self.cap, "Backoff.cap")
        return pb.RetryBackoff(base_seconds=_seconds(self.base, "Backoff.base"), factor=self.factor, cap_seconds=cap)


@dataclass(frozen=True)
class RetryStrategy:
    """`count` retries after the first attempt; `backoff` paces them (unset: the platform's default)."""

    count: int
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 0:
            raise ValueError(f"RetryStrategy.count must be an int >= 0, not {self.count!r}")
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise TypeError(f"RetryStrategy.backoff must be a Backoff, not {type(self.backoff).__name__}")


@dataclass(frozen=True)
class Timeout:
    """`max_runtime` bounds one attempt's run; `max_queued_time` its wait to start.

    An action still queued past its max_queued_time ends TIMED_OUT without starting.
    """

    max_runtime: timedelta | int | float
    max_queued_time: timedelta | int | float | None = None

    def __post_init__(self) -> None:
        _seconds(self.max_runtime, "Timeout.max_runtime")
        if self.max_queued_time is not None:
            _seconds(self.max_queued_time, "Timeout.max_queued_time")

    @property
    def runtime_seconds(self) -> int:
        # The spec counts whole seconds; round up so a timeout never fires early.
        return math.ceil(_seconds(self.max_runtime, "Timeout.max_runtime"))

    @property
    def queued_seconds(self) -> int:
        if self.max_queued_time is None:
            return 0
        return math.ceil(_seconds(self.max_queued_time, "Timeout.max_queued_time"))


def retry_strategy(retries: object) -> RetryStrategy:
    """`retries=` as given to a task: an int or a RetryStrategy."""
    if isinstance(retries, RetryStrategy):
        return retries
    if isinstance(retries, int) and not isinstance(retries, bool):
        return RetryStrategy(count=retries)
    raise TypeError(f"retries must be an int or a RetryStrategy, not {type(retries).__name__}")


def timeout_policy(timeout: object) -> Timeout | None:
    """`timeout=` as given to a task: seconds, a timedelta or a Timeout; None or 0 for none."""
    if timeout is None or isinstance(timeout, Timeout):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float | timedelta):
        raise TypeError(
            f"timeout must be seconds (int or float), a datetime.timedelta or a Timeout, not {type(timeout).__name__}"
        )
    return Timeout(max_runtime=timeout) if _seconds(timeout, "timeout") else None
