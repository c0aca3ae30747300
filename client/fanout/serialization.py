"""Inputs and outputs of tasks as JSON: readable in `fanout get`, stable for hashing."""

from __future__ import annotations

import json
from typing import Any


def encode_inputs(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    try:
        return json.dumps({"args": list(args), "kwargs": kwargs}, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"inputs of task {task_name} must be JSON-serializable: {exc}") from None


def decode_inputs(data: bytes) -> tuple[list[Any], dict[str, Any]]:
    if not data:
        return [], {}
    payload = json.loads(data)
    return payload["args"], payload["kwargs"]


def encode_output(task_name: str, value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the result of task {task_name} must be JSON-serializable: {exc}") from None


def decode_output(data: bytes) -> Any:
    return json.loads(data) if data else None
