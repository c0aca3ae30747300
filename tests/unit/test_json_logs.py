"""`--log-format json`: one JSON object per line, with the event's tenant, run and action when given."""

from __future__ import annotations

import json
import logging

from fanout.cli.logs import JsonFormatter


def record(**extra: object) -> logging.LogRecord:
    made = logging.getLogger("fanout.test").makeRecord(
        "fanout.test", logging.WARNING, __file__, 1, "reclaimed %d leases", (3,), None, extra=extra
    )
    return made


def test_a_line_carries_the_event_and_its_context() -> None:
    line = json.loads(JsonFormatter().format(record(tenant="acme", run="r1", action="a7")))
    assert line["message"] == "reclaimed 3 leases"
    assert (line["level"], line["logger"]) == ("WARNING", "fanout.test")
    assert (line["tenant"], line["run"], line["action"]) == ("acme", "r1", "a7")


def test_context_left_out_is_not_invented() -> None:
    line = json.loads(JsonFormatter().format(record()))
    assert not {"tenant", "run", "action"} & line.keys()
