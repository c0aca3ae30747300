"""Load the Lua scripts once and register them; calls go by SHA (EVALSHA)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

# Scripts that finish actions share the helpers in lib.lua.
_WITH_LIB = frozenset({"report", "reap", "abort", "close_run", "abort_action", "abort_step", "lease"})
# Scripts that read batches share the parser in batch.lua.
_WITH_BATCH = frozenset({"admit", "stage", "move"})


def source(name: str) -> str:
    """The text Redis runs for script `name` (its SHA names it in SLOWLOG)."""
    text = resources.files("fanout.quota").joinpath(f"lua/{name}.lua").read_text()
    if name in _WITH_LIB:
        text = resources.files("fanout.quota").joinpath("lua/lib.lua").read_text() + "\n" + text
    if name in _WITH_BATCH:
        text = resources.files("fanout.quota").joinpath("lua/batch.lua").read_text() + "\n" + text
    return text


@dataclass(frozen=True)
class Scripts:
    admit: AsyncScript
    # A batch too big for one short admit script: staged in chunks, committed at once, moved in chunks.
    stage: AsyncScript
    commit: AsyncScript
    move: AsyncScript
    lease: AsyncScript
    report: AsyncScript
    reap: AsyncScript
    heartbeat: AsyncScript
    abort: AsyncScript
    close_run: AsyncScript
    # Aborting some actions of a run: the named ones at once, their descendants in chunks.
    abort_action: AsyncScript
    abort_step: AsyncScript
    drop_run: AsyncScript
    snapshot: AsyncScript
    events: AsyncScript
    set_limits: AsyncScript
    mark_ready: AsyncScript
    keep_output: AsyncScript

    @classmethod
    def register(cls, redis: aioredis.Redis) -> Scripts:
        return cls(**{name: redis.register_script(source(name)) for name in cls.__dataclass_fields__})
