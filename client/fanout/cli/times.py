"""Times on the command line: an ISO date or time (UTC unless it says otherwise) or a duration from now."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from fanout.errors import ConfigError

_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, *, past: bool, now: float | None = None) -> float:
    """Unix time of `text`: "2026-12-31", "2026-12-31T18:00", "...+02:00", or a duration like 90s, 30m, 2h, 7d
    counted back from now (`past`, for --since) or forward (for --until)."""
    now = time.time() if now is None else now
    if match := _DURATION.fullmatch(text.strip()):
        seconds = int(match[1]) * _UNIT_SECONDS[match[2]]
        return now - seconds if past else now + seconds
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"cannot read the time {text!r}: give a date (2026-12-31), a time (2026-12-31T18:00, UTC unless an "
            "offset is given) or a duration (90s, 30m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def show(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"
