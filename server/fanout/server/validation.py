"""Bounds on every request field; a violation is INVALID_ARGUMENT and writes nothing."""

from __future__ import annotations

import re
from collections.abc import Sequence

from fanout.quota import keys, phases
from fanout.server.settings import Settings
from fanout.server.status import invalid
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb

MAX_TASK_REF = 1024
MAX_TASK_NAME = 256
MAX_IMAGE = 512
MAX_COMMAND_ARGS = 256
MAX_ENV = 64
MAX_ENV_BYTES = 8192
# Most actions named in one rejection: the names travel in a status trailer,
# which gRPC caps at a few KiB. A client drops those and resubmits the rest.
MAX_VIOLATIONS = 20
# A failed action's error text is stored with its result: keep it bounded too.
MAX_ERROR_MESSAGE = 8192
MAX_ERROR_TRACEBACK = 65536
# ReusePolicy bounds: workers per pool, actions at once per worker, seconds a worker may idle.
MAX_REPLICAS = 64
MAX_WORKER_CONCURRENCY = 10_000
MAX_IDLE_TTL_SECONDS = 86_400
# Retry backoff bounds: the server waits at most an hour before a retry whatever the backoff says.
MAX_BACKOFF_SECONDS = 3600.0
MAX_BACKOFF_FACTOR = 100.0
# A code bundle names at most this many sys.path entries, each a short relative path inside it.
MAX_BUNDLE_PATHS = 32
MAX_BUNDLE_PATH = 256
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}\Z")


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
    problems = spec_violations(s, max_payload_bytes)
    if problems:
        raise invalid(problems[0][1])


def spec_violations(s: pb.ActionSpec, max_payload_bytes: int) -> list[tuple[str, str]]:
    """Every bound one action breaks, as (field, description): the field is relative to the spec."""
    who = f"action {s.name[:80]!r}"
    out: list[tuple[str, str]] = []
    if not keys.ACTION_RE.match(s.name):
        rule = "1-128 of A-Z, a-z, 0-9, '_' and '-', starting with a letter or digit"
        out.append(("name", f"action name {s.name[:80]!r} is invalid: {rule}"))
    if not s.task_ref and not s.command:
        out.append(("task_ref", f"{who} has neither a task_ref nor a command"))
    if len(s.task_ref) > MAX_TASK_REF:
        out.append(("task_ref", f"{who}: task_ref is {len(s.task_ref)} characters, cap is {MAX_TASK_REF}"))
    if len(s.task_name) > MAX_TASK_NAME:
        out.append(("task_name", f"{who}: task_name is {len(s.task_name)} characters, cap is {MAX_TASK_NAME}"))
    if len(s.image) > MAX_IMAGE:
        out.append(("image", f"{who}: image is {len(s.image)} characters, cap is {MAX_IMAGE}"))
    if len(s.command) > MAX_COMMAND_ARGS:
        out.append(("command", f"{who}: command has {len(s.command)} arguments, cap is {MAX_COMMAND_ARGS}"))
    if len(s.env) > MAX_ENV:
        out.append(("env", f"{who}: {len(s.env)} environment variables, cap is {MAX_ENV}"))
    elif s.env and sum(len(k) + len(v) for k, v in s.env.items()) > MAX_ENV_BYTES:
        out.append(("env", f"{who}: environment is larger than {MAX_ENV_BYTES} bytes"))
    if len(s.inputs) > max_payload_bytes:
        out.append(("inputs", f"{who}: inputs are {len(s.inputs)} bytes, max_payload_bytes is {max_payload_bytes}"))
    if len(s.environment) > MAX_TASK_NAME:
        out.append(("environment", f"{who}: environment is {len(s.environment)} characters, cap is {MAX_TASK_NAME}"))
    if len(s.group) > MAX_TASK_NAME:
        out.append(("group", f"{who}: group is {len(s.group)} characters, cap is {MAX_TASK_NAME}"))
    if s.HasField("reuse"):
        out += reuse_violations(s.reuse, who)
    if s.HasField("backoff"):
        out += backoff_violations(s.backoff, who)
    if s.HasField("bundle"):
        out += bundle_violations(s.bundle, who)
    return out


def bundle_violations(b: pb.CodeBundle, who: str) -> list[tuple[str, str]]:
    """A sha256 digest and a few relative paths that stay inside the bundle."""
    out: list[tuple[str, str]] = []
    if not _DIGEST_RE.match(b.digest):
        out.append(("bundle.digest", f"{who}: bundle.digest {b.digest[:80]!r} is not 64 lowercase hex digits"))
    if len(b.paths) > MAX_BUNDLE_PATHS:
        out.append(("bundle.paths", f"{who}: bundle.paths has {len(b.paths)} entries, cap is {MAX_BUNDLE_PATHS}"))
    for path in b.paths[:MAX_BUNDLE_PATHS]:
        parts = path.split("/")
        if len(path) > MAX_BUNDLE_PATH or not path or path.startswith("/") or ".." in parts or "\0" in path:
            out.append(("bundle.paths", f"{who}: bundle path {path[:80]!r} is not a short path inside the bundle"))
            break
    return out


def backoff_violations(b: pb.RetryBackoff, who: str) -> list[tuple[str, str]]:
    """Finite, non-negative waits and a factor of at least 1 (the comparisons are also false for NaN)."""
    out: list[tuple[str, str]] = []
    for name, value in (("base_seconds", b.base_seconds), ("cap_seconds", b.cap_seconds)):
        if not 0 <= value <= MAX_BACKOFF_SECONDS:
            out.append((f"backoff.{name}", f"{who}: backoff.{name} is {value}, must be 0 to {MAX_BACKOFF_SECONDS:.0f}"))
    if not 1 <= b.factor <= MAX_BACKOFF_FACTOR:
        out.append(("backoff.factor", f"{who}: backoff.factor is {b.factor}, must be 1 to {MAX_BACKOFF_FACTOR:.0f}"))
    return out


def reuse_violations(r: pb.ReusePolicy, who: str) -> list[tuple[str, str]]:
    """A ReusePolicy within what one dispatcher can hold: a few workers, bounded slots, a finite idle time."""
    out: list[tuple[str, str]] = []
    if not 1 <= r.replicas <= MAX_REPLICAS:
        out.append(("reuse.replicas", f"{who}: reuse.replicas is {r.replicas}, must be 1 to {MAX_REPLICAS}"))
    if not 1 <= r.concurrency <= MAX_WORKER_CONCURRENCY:
        out.append(
            ("reuse.concurrency", f"{who}: reuse.concurrency is {r.concurrency}, must be 1 to {MAX_WORKER_CONCURRENCY}")
        )
    if not 0 <= r.idle_ttl_seconds <= MAX_IDLE_TTL_SECONDS:  # also false for NaN
        out.append(
            (
                "reuse.idle_ttl_seconds",
                f"{who}: reuse.idle_ttl_seconds is {r.idle_ttl_seconds}, must be 0 to {MAX_IDLE_TTL_SECONDS}",
            )
        )
    return out


def batch(
    actions: Sequence[pb.ActionSpec],
    max_batch: int,
    max_payload_bytes: int,
    max_batch_bytes: int = Settings.max_batch_bytes,
    sizes: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> None:
    """The batch as a whole, then each action: every bad action is named, so a client can drop just those.

    `sizes`, when given, bounds each action's serialized size from above (admission.Batch.sizes;
    `names` are the actions' names, if the caller has them already):
    the actions are then screened a list at a time, and only those the screen cannot clear are
    checked one by one, with the same outcome as checking them all.
    """
    if not actions:
        raise invalid("the batch is empty: submit at least one action")
    if len(actions) > max_batch:
        raise invalid(f"the batch holds {len(actions)} actions, cap is {max_batch}; split it")
    if sizes is None or sum(sizes) > max_batch_bytes:
        size = sum(s.ByteSize() for s in actions)
        if size > max_batch_bytes:
            raise invalid(f"the batch is {size} bytes, max_batch_bytes is {max_batch_bytes}; split it")
    suspects = range(len(actions)) if sizes is None else _suspects(actions, sizes, names, max_payload_bytes)
    bad: list[tuple[str, str]] = []
    count = 0
    for i in suspects:
        s = actions[i]
        problems = spec_violations(s, max_payload_bytes)
        if problems:
            count += 1
            if len(bad) < MAX_VIOLATIONS:
                bad += [(f"actions[{i}].{field}", description) for field, description in problems[:1]]
    if bad:
        more = f" (the first {len(bad)} are named)" if count > len(bad) else ""
        raise invalid(f"{count} of {len(actions)} actions are invalid{more}; first: {bad[0][1]}", bad)


# Every name of a batch in one match, joined by newlines; a name holding a newline itself shows in
# the count of newlines and is checked alone.
_NAMES_RE = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_-]{0,127}\n)*[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# A spec of at most this many bytes breaks no length bound above, whatever its fields hold: each
# bound is larger (an env of 64 distinct keys or 256 arguments takes more bytes too).
SMALL_SPEC_BYTES = 256


def _suspects(
    actions: Sequence[pb.ActionSpec], sizes: Sequence[int], names: Sequence[str] | None, max_payload_bytes: int
) -> list[int]:
    """Indexes of the actions that may break a bound; every other one breaks none."""
    small = min(SMALL_SPEC_BYTES, max_payload_bytes)
    out = {i for i, size in enumerate(sizes) if size > small}
    if names is None:
        names = [s.name for s in actions]
    joined = "\n".join(names)
    if joined.count("\n") != len(names) - 1 or not _NAMES_RE.fullmatch(joined):
        out.update(i for i, name in enumerate(names) if not keys.ACTION_RE.match(name))
    refs = [s.task_ref for s in actions]
    if not all(refs):
        out.update(i for i, ref in enumerate(refs) if not ref)  # valid only with a command
    digests = [s.bundle.digest for s in actions]
    if not all(_DIGEST_RE.match(d) for d in set(digests) - {""}):
        out.update(i for i, d in enumerate(digests) if d and not _DIGEST_RE.match(d))
    return sorted(out)


def report_violations(r: dpb.PhaseReport) -> list[tuple[str, str]]:
    """What makes one dispatcher report malformed, as (field, description), fields relative to the report."""
    out: list[tuple[str, str]] = []
    if not keys.TENANT_RE.match(r.tenant):
        out.append(("tenant", f"tenant name {r.tenant[:80]!r} is invalid"))
    if not keys.RUN_RE.match(r.run):
        out.append(("run", f"run name {r.run[:80]!r} is invalid"))
    if not keys.ACTION_RE.match(r.name):
        out.append(("name", f"action name {r.name[:80]!r} is invalid"))
    if r.phase not in (pb.RUNNING, *phases.TERMINAL):
        out.append(
            ("phase", f"action {r.name[:80]!r}: a dispatcher reports RUNNING or a terminal phase, not {r.phase}")
        )
    elif r.retry_after_seconds and r.phase not in (pb.FAILED, pb.TIMED_OUT):
        out.append(("retry_after_seconds", f"action {r.name[:80]!r}: only a failure can be retried"))
    return out


def clipped(r: pb.ActionResult) -> pb.ActionResult:
    """The result with a failure's text kept within bounds: the message's head, the traceback's tail."""
    err = r.error
    if len(err.message) <= MAX_ERROR_MESSAGE and len(err.traceback) <= MAX_ERROR_TRACEBACK:
        return r
    out = pb.ActionResult()
    out.CopyFrom(r)
    if len(err.message) > MAX_ERROR_MESSAGE:
        out.error.message = err.message[:MAX_ERROR_MESSAGE] + " [cut]"
    if len(err.traceback) > MAX_ERROR_TRACEBACK:
        out.error.traceback = "[cut] " + err.traceback[-MAX_ERROR_TRACEBACK:]
    return out


def oversize_output(r: pb.ActionResult, max_payload_bytes: int, name: str) -> str:
    """Why a result's outputs may not be stored, or "" when they fit."""
    if len(r.outputs) <= max_payload_bytes:
        return ""
    return f"action {name!r}: outputs are {len(r.outputs)} bytes, max_payload_bytes is {max_payload_bytes}"
