"""Human output by default, JSON for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from fanout import serialization
from fanout.v1 import actions_pb2 as pb


def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def phase(value: int) -> str:
    return pb.Phase.Name(value)


def describe_result(result: pb.ActionResult) -> str:
    if result.HasField("error"):
        return f"error: {result.error.type}: {result.error.message}"
    if result.outputs:
        return "outputs: " + json.dumps(serialization.decode_output(result.outputs))
    return ""


def status_dict(status: pb.ActionStatus) -> dict[str, Any]:
    data = as_dict(status)
    data["phase"] = phase(status.phase)
    if status.result.outputs:
        data["result"] = {"outputs": serialization.decode_output(status.result.outputs)}
    return data
