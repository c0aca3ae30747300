"""Log output of the `fanout` processes: human text, or one JSON object per line for log pipelines.

JSON lines carry time, level, logger and message, the exception if any, and
the tenant, run and action of the event when the call site names them
(`log.warning(..., extra={"tenant": t, "run": r, "action": a})`).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
# Commands that run as services: their significant events (fanout.server.event_log) are info lines.
SERVICES = ("server", "dispatcher")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("tenant", "run", "action")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def default_format() -> str:
    value = os.environ.get("FANOUT_LOG_FORMAT", "text")
    return value if value in FORMATS else "text"


def default_level() -> str | None:
    """FANOUT_LOG_LEVEL if it names a level; None lets the command choose."""
    value = os.environ.get("FANOUT_LOG_LEVEL", "").lower()
    return value if value in LEVELS else None


def configure(level: int, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
