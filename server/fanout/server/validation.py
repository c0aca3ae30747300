"""Bounds on every request field; a violation is INVALID_ARGUMENT and writes nothing."""

from __future__ import annotations

from collections.abc import Sequence

from fanout.quota import keys
from fanout.server.status import invalid
from fanout.v1 import actions_pb2 as pb

MAX_TASK_REF = 1024
MAX_TASK_NAME = 256
MAX_IMAGE = 512
MAX_COMMAND_ARGS = 256
MAX_ENV = 64
MAX_ENV_BYTES = 8192


def run_name(value: str, what: str = "run") -> str:
    if not keys.RUN_RE.match(value):
        raise invalid(
            f"{what} name {value[:80]!r} is invalid: 1-63 of a-z, 0-9 and '-', starting with a letter or digit"
        )
    return value


def action_name(value: str, what: str = "action") -> str:
    if not keys.ACTION_RE.match(value):
        raise invalid(
            f"{what} name {value[:80]!r} is invalid: "
            "1-128 of A-Z, a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return value


def tenant_name(value: str) -> str:
    if not keys.TENANT_RE.match(value):
        raise invalid(
            f"tenant name {value[:80]!r} is invalid: 1-63 of a-z, 0-9 and '-', starting with a letter or digit"
        )
    return value


def spec(s: pb.ActionSpec, max_payload_bytes: int) -> None:
    action_name(s.name)
    if not s.task_ref and not s.command:
        raise invalid(f"action {s.name!r} has neither a task_ref nor a command")
    if len(s.task_ref) > MAX_TASK_REF:
        raise invalid(f"action {s.name!r}: task_ref is {len(s.task_ref)} characters, cap is {MAX_TASK_REF}")
    if len(s.task_name) > MAX_TASK_NAME:
        raise invalid(f"action {s.name!r}: task_name is {len(s.task_name)} characters, cap is {MAX_TASK_NAME}")
    if len(s.image) > MAX_IMAGE:
        raise invalid(f"action {s.name!r}: image is {len(s.image)} characters, cap is {MAX_IMAGE}")
    if len(s.command) > MAX_COMMAND_ARGS:
        raise invalid(f"action {s.name!r}: command has {len(s.command)} arguments, cap is {MAX_COMMAND_ARGS}")
    if len(s.env) > MAX_ENV:
        raise invalid(f"action {s.name!r}: {len(s.env)} environment variables, cap is {MAX_ENV}")
    if s.env and sum(len(k) + len(v) for k, v in s.env.items()) > MAX_ENV_BYTES:
        raise invalid(f"action {s.name!r}: environment is larger than {MAX_ENV_BYTES} bytes")
    if len(s.inputs) > max_payload_bytes:
        raise invalid(f"action {s.name!r}: inputs are {len(s.inputs)} bytes, max_payload_bytes is {max_payload_bytes}")


def batch(actions: Sequence[pb.ActionSpec], max_batch: int, max_payload_bytes: int) -> None:
    if not actions:
        raise invalid("the batch is empty: submit at least one action")
    if len(actions) > max_batch:
        raise invalid(f"the batch holds {len(actions)} actions, cap is {max_batch}; split it")
    for s in actions:
        spec(s, max_payload_bytes)


def result(r: pb.ActionResult, max_payload_bytes: int, name: str) -> None:
    if len(r.outputs) > max_payload_bytes:
        raise invalid(f"action {name!r}: outputs are {len(r.outputs)} bytes, max_payload_bytes is {max_payload_bytes}")
